"""`import lmos` stays light: no torch or transformers until a model loads."""

from __future__ import annotations

import subprocess
import sys


def test_import_lmos_does_not_import_torch() -> None:
    code = ("import sys, lmos, lmos.system, lmos.kernel.kernel, lmos.syscalls.table; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"import lmos pulled in: {r.stdout} {r.stderr}"
