"""``lmos cp`` / ``write`` / ``mount`` from the command line, with and without a running kernel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from lmos.cli.control import socket_path
from lmos.cli.hostfiles import read_tree, write_tree
from lmos.cli.statedir import running, syscall_on, syscalls_on
from lmos.errors import Errno, SyscallError
from lmos.kernel.files import MAX_FILE_BYTES

LMOS = "from lmos.cli import main; main()"
BLOB = bytes(range(256)) * 40 + b"\x00\r\n\xff" * 100  # every byte value, NULs, a CR/LF mix


def lmos(state: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", LMOS, *args, "--state-dir", str(state)], input=stdin,
                          capture_output=True, timeout=120)


def err(r: subprocess.CompletedProcess[bytes]) -> str:
    return r.stderr.decode()


@pytest.fixture(params=["no kernel", "running kernel"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A state directory, either idle or held by a running ``lmos run sleep`` (then calls go through
    its control socket: opening a second kernel on it would fail with EBUSY)."""
    d = tmp_path / "state"
    if request.param == "no kernel":
        yield d
        return
    proc = subprocess.Popen([sys.executable, "-c", LMOS, "run", "sleep", "60", "--model", "scripted",
                             "--state-dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not running(str(d)):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the kernel did not start"
            time.sleep(0.1)
        yield d
        assert proc.poll() is None  # still the same kernel: nothing opened the directory behind it
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_binary_round_trip_and_folders(state: Path, tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(BLOB)
    assert lmos(state, "cp", str(src), "lmos:/data/blob.bin").returncode == 0
    out = tmp_path / "back.bin"
    r = lmos(state, "cp", "lmos:/data/blob.bin", str(out))
    assert r.returncode == 0, err(r)
    assert out.read_bytes() == BLOB
    r = lmos(state, "cp", "lmos:/data/blob.bin", "-")
    assert r.stdout == BLOB

    tree = tmp_path / "docs"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.bin").write_bytes(BLOB[:500])
    (tree / "sub" / "deeper" / "c.md").write_text("# c\n")
    r = lmos(state, "cp", str(tree), "lmos:/kb")
    assert r.returncode == 1 and "EISDIR" in err(r) and "-r" in err(r)
    assert lmos(state, "cp", "-r", str(tree), "lmos:/kb").returncode == 0  # new name: the folder becomes /kb
    assert lmos(state, "cp", "-r", str(tree), "lmos:/kb").returncode == 0  # existing folder: /kb/docs
    listing = syscall_on(str(state), "fs_list", path="/kb", recursive=True)["entries"]
    files = sorted(e["path"] for e in listing if e["kind"] == "file")
    assert files == ["/kb/a.txt", "/kb/docs/a.txt", "/kb/docs/sub/b.bin", "/kb/docs/sub/deeper/c.md",
                     "/kb/sub/b.bin", "/kb/sub/deeper/c.md"]
    out_dir = tmp_path / "out"
    r = lmos(state, "cp", "-r", "lmos:/kb/docs", str(out_dir))
    assert r.returncode == 0, err(r)
    assert (out_dir / "sub" / "b.bin").read_bytes() == BLOB[:500]
    assert (out_dir / "sub" / "deeper" / "c.md").read_text() == "# c\n"
    r = lmos(state, "cp", "-r", "lmos:/kb/docs", str(out_dir))  # into the existing folder: out/docs
    assert r.returncode == 0 and (out_dir / "docs" / "a.txt").read_text() == "a\n"

    r = lmos(state, "write", "lmos:/notes/stdin.txt", stdin=b"line 1\nline 2\n")
    assert r.returncode == 0, err(r)
    assert lmos(state, "cp", "-", "lmos:/notes/dash.txt", stdin=b"\x00\x01").returncode == 0
    got = syscalls_on(str(state), [("fs_read", {"path": "/notes/stdin.txt"}),
                                   ("fs_read", {"path": "/notes/dash.txt", "binary": True})])
    assert got[0]["data"] == "line 1\nline 2\n" and got[1]["data_b64"] == "AAE="


def test_copy_in_onto_an_existing_file_needs_force(state: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("first\n")
    two.write_text("second\n")
    assert lmos(state, "cp", str(one), "lmos:/f.txt").returncode == 0
    r = lmos(state, "cp", str(two), "lmos:/f.txt", stdin=b"y\n")  # not a terminal: no question asked
    assert r.returncode == 1 and err(r).strip() == \
        "lmos: EEXIST: lmos:/f.txt exists; nothing copied (use --force to overwrite)"
    assert syscall_on(str(state), "fs_read", path="/f.txt")["data"] == "first\n"
    # a folder copy with one clash writes nothing at all
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "new.txt").write_text("new")
    (tree / "f.txt").write_text("clash")
    assert lmos(state, "cp", "-r", str(tree), "lmos:/t").returncode == 0  # /t/new.txt, /t/f.txt
    (tree / "extra.txt").write_text("extra")
    r = lmos(state, "cp", "-r", str(tree), "lmos:/")
    assert r.returncode == 1 and "EEXIST" in err(r)
    with pytest.raises(SyscallError) as e:
        syscall_on(str(state), "fs_stat", path="/t/extra.txt")
    assert e.value.errno == Errno.ENOENT  # nothing half-copied
    r = lmos(state, "cp", "--force", str(two), "lmos:/f.txt")
    assert r.returncode == 0, err(r)
    assert syscall_on(str(state), "fs_read", path="/f.txt")["data"] == "second\n"
    assert lmos(state, "cp", "-f", "-r", str(tree), "lmos:/").returncode == 0
    assert syscall_on(str(state), "fs_read", path="/t/extra.txt")["data"] == "extra"


def test_size_limits_are_checked_before_anything_is_written(state: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    r = lmos(state, "cp", str(big), "lmos:/big.bin")
    assert r.returncode == 1 and err(r).startswith("lmos: EFBIG: ") and str(MAX_FILE_BYTES) in err(r)
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "ok.txt").write_text("fine")
    os.link(big, tree / "z-big.bin")
    r = lmos(state, "cp", "-r", str(tree), "lmos:/t")
    assert r.returncode == 1 and "EFBIG" in err(r)
    r = lmos(state, "cp", "-", "lmos:/in.bin", stdin=b"y" * (MAX_FILE_BYTES + 1))
    assert r.returncode == 1 and "EFBIG" in err(r)
    with pytest.raises(SyscallError):
        syscall_on(str(state), "fs_stat", path="/t")
    (tree / "z-big.bin").unlink()
    (tree / "more.txt").write_text("more")
    with pytest.raises(SyscallError) as e:
        read_tree(str(tree), recursive=True, max_total=6)  # the total limit of one copy: 8 bytes
    assert e.value.errno == Errno.EFBIG and "the copy" in e.value.message


def test_copy_in_refuses_links_out_of_the_folder(state: Path, tmp_path: Path) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    tree = tmp_path / "download"
    tree.mkdir()
    (tree / "readme.txt").write_text("hi")
    os.symlink("readme.txt", tree / "alias.txt")  # inside: copied as a file
    assert lmos(state, "cp", "-r", str(tree), "lmos:/ok").returncode == 0
    assert syscall_on(str(state), "fs_read", path="/ok/alias.txt")["data"] == "hi"
    os.symlink(secret, tree / "zz-key.txt")
    r = lmos(state, "cp", "-r", str(tree), "lmos:/dl")
    assert r.returncode == 1 and "EACCES" in err(r) and "links outside" in err(r)
    with pytest.raises(SyscallError):
        syscall_on(str(state), "fs_stat", path="/dl")


def test_copy_out_refuses_symlinks_and_existing_files(state: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("from the store")
    (src / "sub" / "b.txt").write_text("b")
    assert lmos(state, "cp", "-r", str(src), "lmos:/s").returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "a.txt")  # planted: out/a.txt -> victim
    for extra in ([], ["--force"]):
        r = lmos(state, "cp", *extra, "lmos:/s/a.txt", str(out))
        assert r.returncode == 1 and "EACCES" in err(r) and "symlink" in err(r), err(r)
    assert victim.read_text() == "precious" and os.path.islink(out / "a.txt")

    out2 = tmp_path / "out2"
    out2.mkdir()
    os.symlink(elsewhere, out2 / "sub")  # planted folder link: out2/sub -> elsewhere
    r = lmos(state, "cp", "-r", "-f", "lmos:/s", str(out2 / "s"))
    assert r.returncode == 0, err(r)  # out2/s is new: out2/s/sub is a real folder
    r = lmos(state, "cp", "-r", "-f", "lmos:/s", str(out2))  # into out2 -> out2/s/...: fine too
    assert r.returncode == 0
    os.rename(out2 / "s", tmp_path / "moved")
    os.symlink(elsewhere, out2 / "s")
    r = lmos(state, "cp", "-r", "-f", "lmos:/s", str(out2))
    assert r.returncode == 1 and "symlink" in err(r)
    assert list(elsewhere.iterdir()) == []

    existing = tmp_path / "exists.txt"
    existing.write_text("keep")
    r = lmos(state, "cp", "lmos:/s/a.txt", str(existing))
    assert r.returncode == 1 and "EEXIST" in err(r) and existing.read_text() == "keep"
    assert lmos(state, "cp", "-f", "lmos:/s/a.txt", str(existing)).returncode == 0
    assert existing.read_text() == "from the store"


def test_write_tree_never_leaves_the_target_folder(tmp_path: Path) -> None:
    for bad in ("../x", "a/../../x", "/etc/x", "a//b", ".", "a/./b"):
        with pytest.raises(SyscallError) as e:
            write_tree(str(tmp_path), [(bad, b"x")])
        assert e.value.errno == Errno.EACCES
    assert list(tmp_path.iterdir()) == []
    # a link swapped in after the checks is still not followed: the final open uses O_NOFOLLOW/O_EXCL
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "d" / "x")
    with pytest.raises(SyscallError):
        write_tree(str(tmp_path / "d"), [("x", b"x")], force=True)
    assert not (tmp_path / "elsewhere").exists()


def test_mount_from_the_command_line(state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest's folders are root's own (0700): on a root host the front ends act as nobody unless told
    # otherwise, and nobody cannot read them (tests/test_kerneld.py checks that refusal)
    monkeypatch.setenv("LMOS_AS_ROOT", "1")
    host = tmp_path / "faq"
    host.mkdir()
    (host / "faq.md").write_text("Q: hours?\nA: 9-5.\n")
    r = lmos(state, "mount", str(tmp_path / "missing"), "/support")
    assert r.returncode == 1 and err(r).startswith("lmos: ENOENT: no such host folder")
    r = lmos(state, "mount", "faq", "/support")  # a relative host path is the caller's, made absolute
    assert r.returncode == 1
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = lmos(state, "mount", "faq", "lmos:/support", "--ro")
    finally:
        os.chdir(cwd)
    assert r.returncode == 0, err(r)
    r = lmos(state, "mount")
    assert r.stdout.decode().strip() == f"{host} on lmos:/support (ro)"
    r = lmos(state, "cp", "lmos:/support/faq.md", "-")
    assert r.stdout == b"Q: hours?\nA: 9-5.\n"
    r = lmos(state, "cp", str(host / "faq.md"), "lmos:/support/new.md")
    assert r.returncode == 1 and "EROFS" in err(r)
    assert lmos(state, "umount", "/support").returncode == 0
    r = lmos(state, "umount", "/support")
    assert r.returncode == 1 and "EINVAL" in err(r) and "not a mount point" in err(r)
    assert lmos(state, "mount").stdout == b""


def test_statedir_calls_without_a_model(tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    assert not running(d) and not socket_path(d).exists()
    r = syscalls_on(d, [("fs_write", {"path": "/x", "data": "1"}), ("fs_read", {"path": "/x"})])
    assert (r[1]["path"], r[1]["data"], r[1]["size"]) == ("/x", "1", 1)
    with pytest.raises(SyscallError) as e:
        syscall_on(d, "llm_generate", prompt="hello", max_tokens=1)
    assert (e.value.errno, e.value.message) == (Errno.ENOENT, "no model is loaded")
    with pytest.raises(SyscallError) as e:
        syscall_on(d, "no_such_call")
    assert e.value.errno == Errno.ENOSYS


def test_copy_in_asks_on_a_terminal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    f = tmp_path / "f.txt"
    f.write_text("one")
    assert lmos(state, "cp", str(f), "lmos:/f.txt").returncode == 0
    f.write_text("two")
    for answer, expect in (("n", "one"), ("y", "two")):
        child = pexpect.spawn(sys.executable, ["-c", LMOS, "cp", str(f), "lmos:/f.txt", "--state-dir",
                                               str(state)], encoding="utf-8", timeout=60)
        child.expect(r"overwrite lmos:/f.txt\? \[y/N\]")
        child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == (0 if answer == "y" else 1)
        assert syscall_on(str(state), "fs_read", path="/f.txt")["data"] == expect
