"""lmosh's file commands in a real terminal (pexpect): put, get, multi-line write, mount."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pexpect

from lmos.cli.statedir import syscall_on
from lmos.kernel.files import MAX_FILE_BYTES

PROMPT = "lmosh\\$"
ENTRY = "from lmos.cli import shell_main; shell_main()"


def spawn_shell(tmp_path: Path, cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-c", ENTRY, "--model", "scripted", "--state-dir",
                                           str(tmp_path / "state")], cwd=str(cwd),
                          encoding="utf-8", timeout=30, dimensions=(40, 200),
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "xterm",
                               "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONPATH": os.pathsep.join(sys.path),
                               # pytest's folders are root's (0700): on a root host the shell acts as
                               # root to mount them (by default root's front ends act as nobody)
                               "LMOS_AS_ROOT": "1"})
    child.expect(PROMPT)
    return child


def command(sh: pexpect.spawn, line: str, *expect: str) -> None:
    time.sleep(0.1)  # let prompt_toolkit take the terminal before typing
    sh.sendline(line)
    for e in expect:
        sh.expect(e)
    sh.expect(PROMPT)


def bye(sh: pexpect.spawn) -> None:
    sh.sendline("exit")
    sh.expect(pexpect.EOF)


def test_put_get_and_heredoc_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "docs" / "sub").mkdir(parents=True)
    (home / "docs" / "a.txt").write_text("alpha\n")
    (home / "docs" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3)
    (home / "big.bin").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    sh = spawn_shell(tmp_path, home)
    try:
        # a here-document: lines up to the marker, kept exactly (indentation, blank lines)
        sh.sendline("write /notes/faq.md <<EOF")
        for line in ("# FAQ", "", "  Q: hours?", "  A: 9-5.", "EOF"):
            sh.expect(">")  # the continuation prompt ("> ", drawn with escape codes between)
            time.sleep(0.1)
            sh.sendline(line)
        sh.expect(PROMPT)
        command(sh, "cat /notes/faq.md", "# FAQ", "A: 9-5.")
        # no text: lines up to a single '.'
        sh.sendline("write /notes/list.txt")
        for line in ("one", "two", "."):
            sh.expect(">")
            time.sleep(0.1)
            sh.sendline(line)
        sh.expect(PROMPT)
        command(sh, "write /notes/one.txt single line of words")

        command(sh, "put -r docs /kb", r"2 files, 774 bytes")  # relative to the shell's folder
        command(sh, "ls /kb/sub", "b.bin")
        command(sh, "put docs/a.txt /kb/a.txt", r"put: EEXIST: /kb/a.txt exists; nothing copied")
        command(sh, "put big.bin /big.bin", r"put: EFBIG: .*big.bin is 1048577 bytes")
        command(sh, "put docs /kb2", r"put: EISDIR: .*copy folders with -r")

        command(sh, "get -r /kb out", r"2 files, 774 bytes")
        command(sh, "get /notes out/", r"get: EISDIR")
        command(sh, "get -r /notes out/", r"3 files")
        os.symlink(victim, home / "out" / "planted.txt")
        for force in ("", "-f "):
            command(sh, f"get {force}/notes/one.txt out/planted.txt",
                    r"get: EACCES: refused to write through a symlink")
        command(sh, "get /kb/a.txt out/a.txt", r"get: EEXIST: .*out/a.txt exists")

        # replacing a store file with put -f asks first
        (home / "docs" / "a.txt").write_text("alpha 2\n")
        sh.sendline("put -f docs/a.txt /kb/a.txt")
        sh.expect(r'wants to overwrite "/kb/a.txt".*\[y/N\]')
        sh.sendline("y")
        sh.expect("1 file, 8 bytes")
        sh.expect(PROMPT)
        command(sh, "cat /kb/a.txt", "alpha 2")

        # mounts from the shell (the operator's shell holds every capability)
        command(sh, "mount docs /faq", )
        command(sh, "mount", r"docs on /faq \(ro\)")
        command(sh, "cat /faq/a.txt", "alpha 2")
        command(sh, "write /faq/x.txt no", r"write: EROFS")
        command(sh, "umount /faq")
        command(sh, "mount nowhere /faq", r"mount: ENOENT: no such host folder")
        bye(sh)
    finally:
        sh.close(force=True)
    out = home / "out"
    assert (out / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 3
    assert (out / "a.txt").read_text() == "alpha\n"
    assert (out / "notes" / "faq.md").read_text() == "# FAQ\n\n  Q: hours?\n  A: 9-5.\n"
    assert (out / "notes" / "list.txt").read_text() == "one\ntwo\n"
    assert (out / "notes" / "one.txt").read_text() == "single line of words\n"
    assert victim.read_text() == "precious"
    state = str(tmp_path / "state")
    assert syscall_on(state, "fs_mounts")["mounts"] == []


def test_heredoc_in_a_script(tmp_path: Path) -> None:
    """Scripts (-c, files, piped input) read the document from their own next lines."""
    script = "write /a.txt <<END\nfirst\n  second\nEND\ncat /a.txt\nwrite /b.txt\nx\n.\ncat /b.txt\n"
    r = subprocess.run([sys.executable, "-c", ENTRY, "--model", "scripted", "--state-dir",
                        str(tmp_path / "s")], input=script, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "first\n  second\nx\n"
    r = subprocess.run([sys.executable, "-c", ENTRY, "--model", "scripted", "--state-dir",
                        str(tmp_path / "s"), "-c", "write /c.txt <<EOF\nc1\nEOF\ncat /c.txt; cat /a.txt"],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (0, "c1\nfirst\n  second\n"), r.stderr
