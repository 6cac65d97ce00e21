"""Host folders mounted read-only in the store: who may mount, what is refused, what reads need."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from kutil import kernel

import lmos
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.confirm import ConfirmRequest

pytestmark = pytest.mark.anyio


def faq(tmp_path: Path) -> Path:
    """A host folder with text, binary, a subfolder, an inside link and links that leave it."""
    host = tmp_path / "faq"
    (host / "sub").mkdir(parents=True)
    (host / "faq.md").write_text("Q: reset password?\nA: use the link.\n")
    (host / "logo.bin").write_bytes(bytes(range(256)) * 4)
    (host / "sub" / "deep.txt").write_text("deep\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text("outside\n")
    os.symlink("faq.md", host / "alias.md")  # stays inside: allowed
    os.symlink(str(secret), host / "leak.txt")  # absolute link out
    os.symlink("../../secret.txt", host / "sub" / "up.txt")  # a relative link out
    os.symlink("../outside", host / "outdir")  # a folder link out
    os.symlink("..", host / "sub" / "parent")  # a link to an inside folder: listed, not walked
    return host


async def _run(k: lmos.Kernel, main: Any, caps: list[str], uid: int | None = None) -> Any:
    return await k.wait(await k.spawn(main, caps=caps, uid=uid))


async def test_mount_shows_the_folder_read_only_and_reads_taint(tmp_path: Path) -> None:
    host = faq(tmp_path)
    asked: list[ConfirmRequest] = []

    async def yes(req: ConfirmRequest) -> bool:
        asked.append(req)
        return True

    async with kernel(state_dir=str(tmp_path / "state"), confirm=yes) as k:
        m = await k.syscall("fs_mount", host_path=str(host), path="/support")
        assert (m.path, m.host_path, m.ro) == ("/support", str(host.resolve()), True)
        root = [(e.name, e.kind) for e in (await k.syscall("fs_list", path="/")).entries]
        assert ("support", "dir") in root
        names = sorted(e.name for e in (await k.syscall("fs_list", path="/support")).entries)
        assert names == ["alias.md", "faq.md", "logo.bin", "sub"]  # links leading out are not shown
        r = await k.syscall("fs_read", path="/support/faq.md")
        assert r.data.startswith("Q: reset password?")
        assert (await k.syscall("fs_read", path="/support/alias.md")).data == r.data
        b = await k.syscall("fs_read", path="/support/logo.bin", binary=True)
        import base64

        assert base64.b64decode(b.data_b64) == bytes(range(256)) * 4
        tree = [e.path for e in (await k.syscall("fs_list", path="/support", recursive=True)).entries]
        assert "/support/sub/deep.txt" in tree and not any("parent/" in p for p in tree)
        st = await k.syscall("fs_stat", path="/support/sub/deep.txt")
        assert (st.kind, st.size, st.tainted) == ("file", 5, True)

        async def writer(sys: Sys, argv: list[str]) -> Any:
            out = []
            for call, args in [("fs_write", {"path": "/support/faq.md", "data": "pwned"}),
                               ("fs_write", {"path": "/support/new.txt", "data": "x"}),
                               ("fs_delete", {"path": "/support/faq.md"}),
                               ("fs_delete", {"path": "/support", "recursive": True})]:
                try:
                    await sys.call(call, **args)
                    out.append("ok")
                except SyscallError as e:
                    out.append(e.errno.name)
            return out

        w = await _run(k, writer, ["fs.read", "fs.write"])
        assert w.result == ["EROFS", "EROFS", "EROFS", "EROFS"]
        assert asked == []  # refused before anyone was asked to confirm
        assert (host / "faq.md").read_text().startswith("Q: reset")

    async with kernel(state_dir=str(tmp_path / "state")) as k:  # init above read the mount: tainted

        async def reader(sys: Sys, argv: list[str]) -> Any:
            assert k.core is not None
            me = k.core.get((await sys.call("getpid")).pid)
            clean = me.tainted
            await sys.call("fs_read", path="/support/faq.md")
            return [clean, me.tainted]

        assert (await _run(k, reader, ["fs.read:/support"])).result == [False, True]


async def test_reads_under_a_mount_need_the_fs_read_capability(tmp_path: Path) -> None:
    host = faq(tmp_path)
    async with kernel() as k:
        await k.syscall("fs_mount", host_path=str(host), path="/support")

        async def prog(sys: Sys, argv: list[str]) -> Any:
            out = []
            for call in ("fs_read", "fs_list", "fs_stat"):
                path = "/support" if call == "fs_list" else "/support/faq.md"
                try:
                    await sys.call(call, path=path)
                    out.append("ok")
                except SyscallError as e:
                    out.append(e.errno.name)
            return out

        assert (await _run(k, prog, ["fs.read:/notes"])).result == ["EPERM"] * 3
        assert (await _run(k, prog, ["fs.write"])).result == ["EPERM"] * 3
        assert (await _run(k, prog, ["fs.read:/support"])).result == ["ok"] * 3
        assert (await _run(k, prog, ["fs.read:/support/faq.md"])).result == ["ok", "EPERM", "ok"]


@pytest.mark.parametrize("path", ["/support/leak.txt", "/support/sub/up.txt", "/support/outdir/x.txt",
                                  "/support/../secret.txt", "/support/sub/../../secret.txt"])
async def test_escapes_from_a_mount_are_refused(tmp_path: Path, path: str) -> None:
    host = faq(tmp_path)
    async with kernel() as k:
        await k.syscall("fs_mount", host_path=str(host), path="/support")
        for call, args in (("fs_read", {}), ("fs_stat", {}), ("fs_read", {"binary": True})):
            with pytest.raises(SyscallError) as e:
                await k.syscall(call, path=path, **args)
            assert e.value.errno == Errno.EACCES, (call, e.value)
        with pytest.raises(SyscallError) as e:
            await k.syscall("fs_list", path="/support/outdir")
        assert e.value.errno == Errno.EACCES


async def test_a_folder_swapped_for_a_link_after_mounting_is_refused(tmp_path: Path) -> None:
    host = faq(tmp_path)
    async with kernel() as k:
        await k.syscall("fs_mount", host_path=str(host), path="/support")
        assert (await k.syscall("fs_read", path="/support/sub/deep.txt")).data == "deep\n"
        shutil.rmtree(host / "sub")
        os.symlink(str(tmp_path / "outside"), host / "sub")  # same name, now leading out
        with pytest.raises(SyscallError) as e:
            await k.syscall("fs_read", path="/support/sub/x.txt")
        assert e.value.errno == Errno.EACCES
        shutil.rmtree(host)
        os.symlink(str(tmp_path / "outside"), host)  # the mounted folder itself becomes a link
        with pytest.raises(SyscallError) as e:
            await k.syscall("fs_read", path="/support/x.txt")
        assert e.value.errno == Errno.EACCES


async def test_bad_mounts_are_refused(tmp_path: Path) -> None:
    host = faq(tmp_path)
    async with kernel() as k:
        await k.syscall("fs_write", path="/notes.txt", data="mine")
        cases = [
            ({"host_path": str(tmp_path / "missing"), "path": "/m"}, Errno.ENOENT),
            ({"host_path": str(host / "faq.md"), "path": "/m"}, Errno.ENOTDIR),
            ({"host_path": "relative/dir", "path": "/m"}, Errno.EINVAL),
            ({"host_path": str(host), "path": "/m", "ro": False}, Errno.EINVAL),
            ({"host_path": str(host), "path": "/"}, Errno.EINVAL),
            ({"host_path": str(host), "path": "/notes.txt"}, Errno.ENOTDIR),
            ({"host_path": str(host), "path": "/a/../b"}, Errno.EACCES),
        ]
        for args, errno in cases:
            with pytest.raises(SyscallError) as e:
                await k.syscall("fs_mount", **args)
            assert e.value.errno == errno, (args, e.value)
            assert "\n" not in e.value.message
        await k.syscall("fs_mount", host_path=str(host), path="/m")
        for path in ("/m", "/m/sub"):  # already a mount point / inside one
            with pytest.raises(SyscallError) as e:
                await k.syscall("fs_mount", host_path=str(host), path=path)
            assert e.value.errno == Errno.EBUSY
        with pytest.raises(SyscallError) as e:
            await k.syscall("fs_umount", path="/nothing")
        assert e.value.errno == Errno.EINVAL
        assert (await k.syscall("fs_mounts")).mounts[0].path == "/m"


async def test_a_folder_the_operator_cannot_read_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.txt").write_text("x")
    state = tmp_path / "state"
    state.mkdir()
    if os.getuid() == 0:
        # root reads everything, so make someone else the operator (the state directory's owner):
        # a root-owned 0700 folder is not readable by them.
        os.chown(state, 65534, 65534)
        locked.chmod(0o700)
    else:
        locked.chmod(0)
    try:
        async with kernel(state_dir=str(state)) as k:
            with pytest.raises(SyscallError) as e:
                await k.syscall("fs_mount", host_path=str(locked), path="/locked")
            assert e.value.errno == Errno.EACCES
            assert ("not readable by the operator" if os.getuid() == 0 else "cannot read") in e.value.message
            assert (await k.syscall("fs_mounts")).mounts == []
    finally:
        locked.chmod(0o755)


async def test_only_the_operator_with_fs_mount_may_mount(tmp_path: Path) -> None:
    host = faq(tmp_path)
    async with kernel() as k:
        assert k.core is not None
        op = k.core.operator_uid

        async def prog(sys: Sys, argv: list[str]) -> Any:
            out = []
            for call, args in (("fs_mount", {"host_path": str(host), "path": "/x"}),
                               ("fs_umount", {"path": "/support"})):
                try:
                    await sys.call(call, **args)
                    out.append("ok")
                except SyscallError as e:
                    out.append(f"{e.errno.name}: {e.message}")
            hosts = [m.host_path for m in (await sys.call("fs_mounts")).mounts]
            return out, hosts

        await k.syscall("fs_mount", host_path=str(host), path="/support")
        stranger = await _run(k, prog, ["*"], uid=op + 4242)
        assert [r.split(":")[0] for r in stranger.result[0]] == ["EPERM", "EPERM"]
        assert "operator" in stranger.result[0][0] and stranger.result[1] == [""]  # host paths hidden
        app = await _run(k, prog, ["fs.read", "fs.write", "spawn"], uid=op)  # the operator's app
        assert [r.split(":")[0] for r in app.result[0]] == ["EPERM", "EPERM"]
        assert "fs.mount" in app.result[0][0]
        shell = await _run(k, prog, ["*"], uid=op)  # the operator's own shell
        assert shell.result[0] == ["ok", "ok"]


async def test_mounts_persist_across_restarts_and_umount_uncovers_the_store(tmp_path: Path) -> None:
    host = faq(tmp_path)
    state = str(tmp_path / "state")
    async with kernel(state_dir=state) as k:
        await k.syscall("fs_write", path="/support/faq.md", data="the store's own copy")
        await k.syscall("fs_mount", host_path=str(host), path="/support")
        assert (await k.syscall("fs_read", path="/support/faq.md")).data.startswith("Q: reset")
    async with lmos.Kernel(model=False, state_dir=state) as k:  # no model needed to manage files
        assert [m.path for m in (await k.syscall("fs_mounts")).mounts] == ["/support"]
        assert (await k.syscall("fs_read", path="/support/faq.md")).data.startswith("Q: reset")
        with pytest.raises(SyscallError) as e:
            await k.syscall("llm_generate", prompt="hi", max_tokens=2)
        assert e.value.errno == Errno.ENOENT and "no model" in e.value.message
        await k.syscall("fs_umount", path="/support")
    async with kernel(state_dir=state) as k:
        assert (await k.syscall("fs_mounts")).mounts == []
        assert (await k.syscall("fs_read", path="/support/faq.md")).data == "the store's own copy"


async def test_files_over_the_size_limit_and_gone_folders(tmp_path: Path) -> None:
    host = faq(tmp_path)
    async with kernel() as k:
        assert k.core is not None
        k.core.files.max_file_bytes = 100
        await k.syscall("fs_mount", host_path=str(host), path="/support")
        with pytest.raises(SyscallError) as e:
            await k.syscall("fs_read", path="/support/logo.bin", binary=True)
        assert e.value.errno == Errno.EFBIG and "1024 bytes" in e.value.message
        (host / "weird\nname.txt").write_text("x")
        (host / "~tilde").write_text("x")
        names = [e.name for e in (await k.syscall("fs_list", path="/support")).entries]
        assert "weird\nname.txt" not in names and "~tilde" not in names
        os.mkfifo(host / "fifo")
        with pytest.raises(SyscallError) as e:
            await k.syscall("fs_read", path="/support/fifo")
        assert e.value.errno == Errno.EACCES
        shutil.rmtree(host)
        with pytest.raises(SyscallError) as e:
            await k.syscall("fs_read", path="/support/faq.md")
        assert e.value.errno == Errno.ENOENT
        assert [e.name for e in (await k.syscall("fs_list", path="/")).entries] == ["support"]
