"""The app store at the syscall level: install, list, show, remove, upgrades, grants, bad input.

Apps are small folders made in tmp_path: a sandboxed code app (``result =
...``) and an agent app, run on the scripted driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from kutil import kernel

import lmos
from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.kernel.appdb import AppDB
from lmos.userland.appstore import canonical_hash, load_dir, package_from_files

pytestmark = pytest.mark.anyio


def code_app(name: str = "hello", version: str = "1.0", caps: tuple[str, ...] = ("llm",),
             code: str = "result = argv\n", tools: tuple[str, ...] = (), extra: str = "") -> dict[str, str]:
    toml = (f"name = {name!r}\nversion = {version!r}\ndescription = 'says hello'\n"
            f"capabilities = {list(caps)!r}\ntools = {list(tools)!r}\n{extra}"
            "[entry]\nkind = 'code'\nsource = 'main.py'\n")
    return {"app.toml": toml, "main.py": code}


def write_app(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


async def installed(k: lmos.Kernel) -> dict[str, Any]:
    return {a.name: a for a in (await k.syscall("app_list")).apps if a.origin == "installed"}


async def run(k: lmos.Kernel, app: str, *argv: str) -> Any:
    w = await k.wait(await k.spawn(app, list(argv)))
    assert w.exit_status == 0, w.error
    return w.result


async def test_install_list_show_run_remove(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "hello", code_app())
    async with kernel() as k:
        plan = await k.syscall("app_inspect", path=str(folder))
        assert (plan.action, plan.needs_grant, plan.caps) == ("install", True, ["llm"])
        assert plan.installed_version is None
        p = await k.syscall("app_install", path=str(folder / "app.toml"), grant=True)
        assert p.hash == plan.hash == load_dir(folder).hash
        apps = await installed(k)
        hello = apps["hello"]
        assert hello.version == "1.0" and hello.hash == p.hash and hello.caps == ["llm"]
        info = await k.syscall("app_info", name="hello")
        assert info.origin == "installed" and info.kind == "code" and info.files == {
            "app.toml": len(code_app()["app.toml"]), "main.py": 14}
        assert k.core is not None  # init installs as the host's user (root's apps run as users.root_runs_as)
        assert info.installed_by == k.core.host_uid and info.installed_at > 0 and not info.trusted
        assert await run(k, "hello", "a", "b") == ["a", "b"]
        r = await k.syscall("app_remove", name="hello")
        assert (r.name, r.version, r.running) == ("hello", "1.0", [])
        assert "hello" not in await installed(k)
        with pytest.raises(SyscallError) as e:
            await k.spawn("hello")
        assert e.value.errno == Errno.ENOENT


async def test_installed_apps_persist_across_reopen(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    async with lmos.Kernel(model=ScriptedDriver(), state_dir=state) as k:
        await k.syscall("app_install", files=code_app(code="result = 'persisted'\n"), grant=True)
    async with lmos.Kernel(model=ScriptedDriver(), state_dir=state) as k:
        assert (await installed(k))["hello"].version == "1.0"
        assert await run(k, "hello") == "persisted"
        await k.syscall("app_remove", name="hello")
    async with lmos.Kernel(model=ScriptedDriver(), state_dir=state) as k:
        assert await installed(k) == {}
        assert k.core is not None and AppDB(k.core.journal).all() == []


def test_hash_is_canonical(tmp_path: Path) -> None:
    files = code_app()
    assert canonical_hash(files) == canonical_hash(dict(reversed(list(files.items()))))
    assert canonical_hash(files) != canonical_hash({**files, "main.py": "result = 1\n"})
    assert canonical_hash({"a": "bc"}) != canonical_hash({"ab": "c"})  # boundaries count
    assert load_dir(write_app(tmp_path / "x", files)).hash == package_from_files(files).hash


async def test_upgrade_rules(tmp_path: Path) -> None:
    async with kernel() as k:
        await k.syscall("app_install", files=code_app(), grant=True)
        # the same content again: nothing to do, nothing to grant
        p = await k.syscall("app_install", files=code_app())
        assert p.action == "same" and not p.needs_grant
        # same version, other content: refused unless forced
        other = code_app(code="result = 'other'\n")
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_install", files=other, grant=True)
        assert e.value.errno == Errno.EEXIST and "same version" in e.value.message
        assert (await k.syscall("app_install", files=other, force=True)).action == "reinstall"
        assert await run(k, "hello") == "other"
        # a newer version asking for nothing more needs no new grant
        v2 = code_app(version="1.10", code="result = 'v2'\n")
        p = await k.syscall("app_install", files=v2)
        assert (p.action, p.installed_version, p.needs_grant) == ("upgrade", "1.0", False)
        # a newer version asking for more is granted again
        v3 = code_app(version="2.0", caps=("llm", "ipc"), tools=("calc",), code="result = 'v3'\n")
        plan = await k.syscall("app_inspect", files=v3)
        assert plan.needs_grant and plan.action == "upgrade"
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_install", files=v3)
        assert e.value.errno == Errno.EPERM and "ipc" in e.value.message and "calc" in e.value.message
        assert (await installed(k))["hello"].version == "1.10"
        await k.syscall("app_install", files=v3, grant=True)
        assert (await installed(k))["hello"].caps == ["ipc", "llm", "tool:calc"]
        # a downgrade needs force
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_install", files=v2, grant=True)
        assert e.value.errno == Errno.EEXIST and "downgrade" in e.value.message
        assert (await k.syscall("app_install", files=v2, force=True)).action == "downgrade"
        assert await run(k, "hello") == "v2"


async def test_install_without_grant_lists_what_is_asked() -> None:
    files = code_app(caps=("llm", "fs.read:/docs"), tools=("calc", "clock"))
    async with kernel() as k:
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_install", files=files)
        assert e.value.errno == Errno.EPERM
        assert "capabilities: fs.read:/docs, llm; tools: calc, clock" in e.value.message
        assert await installed(k) == {}


async def test_only_the_operator_installs(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "hello", code_app())
    errors: dict[str, Any] = {}

    async def stranger(sys: Any, argv: list[str]) -> None:
        for call, args in (("app_install", {"files": code_app(), "grant": True}),
                           ("app_inspect", {"path": str(folder)}),
                           ("app_remove", {"name": "hello"})):
            try:
                await sys.call(call, **args)
            except SyscallError as exc:
                errors[call] = exc

    async with kernel() as k:
        assert k.core is not None
        uid = k.core.operator_uid + 4242
        await k.wait(await k.spawn(stranger, caps=["*"], uid=uid))
        assert {c: e.errno for c, e in errors.items()} == dict.fromkeys(
            ("app_install", "app_inspect", "app_remove"), Errno.EPERM)
        assert "operator" in errors["app_install"].message
        # an app run by the operator holds no app.install capability: it cannot install, nor read the host
        errors.clear()
        await k.wait(await k.spawn(stranger, caps=["llm", "spawn"], uid=k.core.operator_uid))
        for call in ("app_install", "app_inspect"):
            assert errors[call].errno == Errno.EPERM and "app.install" in errors[call].message
        assert await installed(k) == {}


async def test_python_entry_needs_trusted() -> None:
    files = {"app.toml": "name = 'py'\ncapabilities = []\n[entry]\nkind = 'python'\n"
                         "function = 'test_appstore:py_main'\n"}
    async with kernel() as k:
        assert (await k.syscall("app_inspect", files=files)).trusted_needed
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_install", files=files, grant=True)
        assert e.value.errno == Errno.EPERM and "trusted" in e.value.message
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_load", files=files, grant=True)
        assert e.value.errno == Errno.EPERM
        assert await installed(k) == {}
        await k.syscall("app_install", files=files, trusted=True)
        assert await run(k, "py", "x") == "python x"
        assert (await k.syscall("app_info", name="py")).trusted


async def py_main(sys: Any, argv: list[str], manifest: Any) -> str:
    return "python " + " ".join(argv)


async def test_a_running_app_gets_exactly_the_granted_caps() -> None:
    code = ("try:\n    fs_read(path='/secret')\n    denied = ''\nexcept SyscallError as e:\n"
            "    denied = e.errno\nresult = denied\n")
    async with kernel() as k:
        await k.syscall("fs_write", path="/secret", data="s")
        await k.syscall("app_install", files=code_app(code=code), grant=True)
        assert await run(k, "hello") == "EPERM"
        with pytest.raises(SyscallError) as e:  # not even init can widen what was granted
            await k.spawn("hello", caps=["llm", "fs.read"])
        assert e.value.errno == Errno.EPERM and "granted only" in e.value.message
        assert await run(k, "hello") == "EPERM"


async def test_agent_app_runs_with_its_tools(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "ag", {"app.toml": "name = 'ag'\nversion = '0.3'\nsystem = 'Be brief.'\n"
                                         "tools = ['calc']\n[entry]\nkind = 'agent'\n"})
    async with lmos.Kernel(model=ScriptedDriver("fine"), state_dir=":memory:") as k:
        p = await k.syscall("app_install", path=str(folder), grant=True)
        assert p.caps == ["llm", "tool:calc"] and p.kind == "agent"
        assert (await run(k, "ag", "hi"))["text"] == "fine"


async def test_a_running_process_keeps_its_version() -> None:
    slow = "sleep(seconds=0.6)\nresult = manifest['version']\n"
    async with kernel() as k:
        await k.syscall("app_install", files=code_app(code=slow), grant=True)
        old = await k.spawn("hello")
        await k.syscall("app_install", files=code_app(version="2.0", code=slow), grant=True)
        new = await k.spawn("hello")
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_remove", name="hello")
        assert e.value.errno == Errno.EBUSY and str(old) in e.value.message
        assert "hello" in await installed(k)  # refused: still installed
        r = await k.syscall("app_remove", name="hello", force=True)
        assert set(r.running) == {old, new} and "hello" not in await installed(k)
        assert (await k.wait(old)).result == "1.0"
        assert (await k.wait(new)).result == "2.0"


async def test_app_load_is_private_and_used_once() -> None:
    seen: dict[str, Any] = {}

    async def loader(sys: Any, argv: list[str]) -> None:
        try:
            await sys.call("app_load", files=code_app(code="result = 'loaded'\n"))
        except SyscallError as exc:
            seen["no_grant"] = exc.errno
        r = await sys.call("app_load", files=code_app(code="result = 'loaded'\n"), grant=True)
        seen["name"] = r.app
        seen["listed"] = r.app in {a.name for a in (await sys.call("app_list")).apps}
        pid = (await sys.call("spawn", app=r.app)).pid
        seen["result"] = (await sys.call("wait", pid=pid)).result
        try:
            await sys.call("spawn", app=r.app)
        except SyscallError as exc:
            seen["again"] = exc.errno

    async with kernel() as k:
        await k.wait(await k.spawn(loader, caps=["llm", "spawn"]))
        assert seen["no_grant"] == Errno.EPERM and not seen["listed"]
        assert seen["result"] == "loaded" and seen["again"] == Errno.ENOENT
        assert seen["name"].startswith("hello#") and await installed(k) == {}
        # another process (even init) cannot spawn somebody else's loaded app
        pid = await k.spawn(loader, caps=["llm", "spawn"])
        await k.wait(pid)
        with pytest.raises(SyscallError) as e:
            await k.spawn(seen["name"])
        assert e.value.errno == Errno.ENOENT


async def test_builtin_apps_come_from_folders_and_hold_their_names() -> None:
    async with kernel() as k:
        apps = {a.name: a for a in (await k.syscall("app_list")).apps}
        for name in ("chat", "calc-agent", "assistant"):
            a = apps[name]
            assert a.origin == "builtin" and a.version == "1.0" and len(a.hash) == 64
        assert (await k.syscall("app_info", name="chat")).kind == "agent"
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_install", files=code_app(name="chat"), grant=True)
        assert e.value.errno == Errno.EEXIST and "built-in" in e.value.message
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_remove", name="chat")
        assert e.value.errno == Errno.EPERM
        assert k.core is not None and AppDB(k.core.journal).all() == []  # built-ins are not stored


def _symlink_out(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("host secret")
    folder = write_app(tmp_path / "evil", code_app(name="evil"))
    (folder / "data.txt").symlink_to(tmp_path / "secret.txt")
    return folder


def _subfolder(tmp_path: Path) -> Path:
    folder = write_app(tmp_path / "sub", code_app(name="sub"))
    write_app(folder / "lib", {"x.py": "y = 1\n"})
    return folder


def _binary(tmp_path: Path) -> Path:
    folder = write_app(tmp_path / "bin", code_app(name="bin"))
    (folder / "blob.dat").write_bytes(b"\xff\xfe\x00")
    return folder


def _huge(tmp_path: Path) -> Path:
    return write_app(tmp_path / "big", {**code_app(name="big"), "data.txt": "x" * (1 << 20)})


BAD_DIRS = [
    (_symlink_out, Errno.EINVAL, "symlinks are not allowed"),
    (_subfolder, Errno.EINVAL, "subfolders are not supported"),
    (_binary, Errno.EINVAL, "not UTF-8"),
    (_huge, Errno.E2BIG, "over the limit"),
]

BAD_FILES = [
    (code_app(extra="capabilitis = ['llm']\n"), Errno.EINVAL, "capabilitis"),
    (code_app(caps=("llm", "root")), Errno.EINVAL, "unknown capability 'root'"),
    (code_app(code="def broken(:\n"), Errno.EINVAL, "main.py: line 1"),
    (code_app(code="x = ().__class__\n"), Errno.EINVAL, "main.py: line 1"),
    ({**code_app(), "../up.py": "x = 1\n"}, Errno.EINVAL, "bad file name"),
    ({"main.py": "result = 1\n"}, Errno.EINVAL, "no app.toml"),
    (code_app(name="chat"), Errno.EEXIST, "built-in"),
]


@pytest.mark.parametrize("make, errno, needle", BAD_DIRS, ids=["symlink", "subfolder", "binary", "huge"])
async def test_bad_folders_install_nothing(tmp_path: Path, make: Any, errno: Errno, needle: str) -> None:
    folder = make(tmp_path)
    async with kernel() as k:
        grant = {"grant": True}
        for call, args in (("app_inspect", {}), ("app_install", grant), ("app_load", grant)):
            with pytest.raises(SyscallError) as e:
                await k.syscall(call, path=str(folder), **args)
            assert e.value.errno == errno and needle in e.value.message and "\n" not in e.value.message
        assert await installed(k) == {}
        assert k.core is not None and AppDB(k.core.journal).all() == []


@pytest.mark.parametrize("files, errno, needle", BAD_FILES,
                         ids=["typo", "capability", "syntax", "sandbox", "path", "manifest", "builtin"])
async def test_bad_apps_install_nothing(files: dict[str, str], errno: Errno, needle: str) -> None:
    async with kernel() as k:
        await k.syscall("app_install", files=code_app(code="result = 'good'\n"), grant=True)
        good = (await installed(k))["hello"].hash
        bad = {**files}
        with pytest.raises(SyscallError) as e:
            await k.syscall("app_install", files=bad, grant=True, force=True)
        assert e.value.errno == errno and needle in e.value.message, e.value.message
        assert "\n" not in e.value.message
        # nothing half-installed: the good version is still there, and runs
        assert {n: a.hash for n, a in (await installed(k)).items()} == {"hello": good}
        assert k.core is not None and [r.hash for r in AppDB(k.core.journal).all()] == [good]
        assert await run(k, "hello") == "good"


async def test_a_stored_app_that_no_longer_loads_does_not_stop_the_boot(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    async with lmos.Kernel(model=ScriptedDriver(), state_dir=state) as k:
        await k.syscall("app_install", files=code_app(), grant=True)
        assert k.core is not None
        db = AppDB(k.core.journal)
        rec = db.get("hello")
        assert rec is not None
        await db.put(msgspec.structs.replace(rec, files={"app.toml": "name = 'hello'\nbogus = 1\n"}))
    async with lmos.Kernel(model=ScriptedDriver(), state_dir=state) as k:
        assert await installed(k) == {}  # skipped, with a warning in the log
        assert (await k.syscall("app_remove", name="hello")).name == "hello"  # still removable


async def test_install_refuses_a_folder_changed_since_inspected(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "hello", code_app())
    async with kernel() as k:
        shown = (await k.syscall("app_inspect", path=str(folder))).hash
        write_app(folder, code_app(caps=("llm", "fs.write")))
        for call in ("app_install", "app_load"):
            with pytest.raises(SyscallError) as e:
                await k.syscall(call, path=str(folder), grant=True, hash=shown)
            assert e.value.errno == Errno.EAGAIN and "changed since" in e.value.message
        assert await installed(k) == {}
