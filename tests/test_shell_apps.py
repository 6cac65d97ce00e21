"""lmosh's ``install``, ``run ./path/app.toml`` and ``uninstall`` in a real terminal (pexpect): what is
asked is shown, y/N decides, and nothing is installed or run on a no."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_shell import ENTRY, PROMPT, ctrl_d, spawn_shell

ALLOW = r"Allow\? \[y/N\]"
CODE = ("name = 'hello'\nversion = '{v}'\ndescription = 'greets'\ncapabilities = ['llm']\ntools = ['calc']\n"
        "[entry]\nkind = 'code'\nsource = 'main.py'\n")
MAIN = "if argv and argv[0] == 'slow':\n    sleep(seconds=30)\nresult = {'greeting': 'hello', 'args': argv}\n"


def make(folder: Path, version: str = "1.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.toml").write_text(CODE.format(v=version))
    (folder / "main.py").write_text(MAIN)
    return folder


def test_install_asks_and_run_a_folder(tmp_path: Path) -> None:
    app = make(tmp_path / "hello")
    sh = spawn_shell(tmp_path / "state")
    try:
        sh.sendline(f"install {app}")
        sh.expect("hello 1.0: greets")
        sh.expect(r"capabilities: llm\s+tools:\s+calc")
        sh.expect(ALLOW)
        sh.sendline("n")
        sh.expect("not granted, nothing installed")
        sh.expect(PROMPT)
        sh.sendline("run hello")
        sh.expect("ENOENT")
        sh.expect(PROMPT)

        sh.sendline(f"install {app}")
        sh.expect(ALLOW)
        sh.sendline("y")
        sh.expect("installed hello 1.0")
        sh.expect(PROMPT)
        sh.sendline("run hello a b")
        sh.expect("greeting")
        sh.expect(PROMPT)

        # an upgrade shows what it replaces
        make(tmp_path / "hello2", "2.0")
        sh.sendline(f"install {tmp_path / 'hello2'}")
        sh.expect(r"hello 2.0 \(upgrade from 1.0\)")
        sh.expect(PROMPT)  # asks nothing more than 1.0 was granted: no question

        # run a folder without installing it: asked the same way, y runs it once
        other = make(tmp_path / "elsewhere" / "greeter")
        (other / "app.toml").write_text(CODE.format(v="0.1").replace("'hello'", "'greeter'"))
        sh.sendline(f"run {other}/app.toml x y")
        sh.expect("greeter 0.1: greets")
        sh.expect(ALLOW)
        sh.sendline("y")
        sh.expect(r"greeting.*hello")
        sh.expect(PROMPT)
        sh.sendline(f"run {other} z")
        sh.expect(ALLOW)
        sh.sendline("n")
        sh.expect("not granted, not run")
        sh.expect(PROMPT)

        # uninstall while it runs asks first
        sh.sendline("run hello slow &")
        sh.expect(r"\[1\] (\d+)")
        sh.expect(PROMPT)
        sh.sendline("uninstall hello")
        sh.expect("hello is running")
        sh.expect(ALLOW)
        sh.sendline("n")
        sh.expect("not removed")
        sh.expect(PROMPT)
        sh.sendline("uninstall hello")
        sh.expect(ALLOW)
        sh.sendline("y")
        sh.expect("removed hello 2.0")
        sh.expect(PROMPT)
        ctrl_d(sh)
    finally:
        if sh.isalive():
            sh.terminate(force=True)


def test_a_script_cannot_grant(tmp_path: Path) -> None:
    """No terminal to answer on: refused, and the next line is not taken as the answer."""
    app = make(tmp_path / "hello")
    r = subprocess.run([sys.executable, "-c", ENTRY, "--model", "scripted", "--state-dir",
                        str(tmp_path / "s"), "-c", f"run echo before; install {app}; run {app}"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert "not granted, nothing installed" in r.stderr and "not granted, not run" in r.stderr
    assert "before" in r.stdout and "greeting" not in r.stdout and r.returncode == 1
