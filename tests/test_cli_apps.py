"""``lmos app install/list/show/remove`` as a user runs them: subprocesses, messages and exit codes,
with no kernel running on the state directory and with one (lmosh) that sees the change at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
from test_shell import PROMPT, ctrl_d, spawn_shell

LMOS = "from lmos.cli import main; main()"
AGENT = ("name = 'helper'\nversion = '1.0'\ndescription = 'a helper'\ntools = ['calc']\n"
         "capabilities = ['llm']\n[entry]\nkind = 'agent'\n")
CODE = "name = 'hello'\nversion = '{v}'\ncapabilities = ['llm']\n[entry]\nkind = 'code'\nsource = 'main.py'\n"


def lmos(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LMOS_MODEL": "scripted", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", LMOS, *args, "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def make(folder: Path, files: dict[str, str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return str(folder)


def test_install_list_show_run_remove(tmp_path: Path) -> None:
    agent = make(tmp_path / "helper", {"app.toml": AGENT})
    r = lmos(tmp_path, "app", "install", agent)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("lmos: EPERM: helper 1.0 asks for permissions that must be granted: "
                        "capabilities: llm; tools: calc\n")
    assert "helper" not in lmos(tmp_path, "app", "list").stdout

    r = lmos(tmp_path, "app", "install", agent, "--grant")
    assert r.returncode == 0 and r.stdout.startswith("installed helper 1.0 ("), r.stderr
    r = lmos(tmp_path, "app", "install", agent + "/app.toml", "--grant")
    assert r.returncode == 0 and "already installed (same content" in r.stdout

    code = make(tmp_path / "hello", {"app.toml": CODE.format(v="1.0"),
                                     "main.py": "result = {'args': argv}\n"})
    assert lmos(tmp_path, "app", "install", code, "--grant").returncode == 0
    listed = {a["name"]: a for a in json.loads(lmos(tmp_path, "app", "list", "--json").stdout)["apps"]}
    assert listed["hello"]["origin"] == "installed" and listed["chat"]["origin"] == "builtin"
    assert listed["helper"]["caps"] == ["llm", "tool:calc"] and len(listed["hello"]["hash"]) == 64
    table = lmos(tmp_path, "app", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "ORIGIN", "CAPABILITIES"]
    assert any(line.split()[:3] == ["hello", "1.0", "installed"] for line in table)

    show = lmos(tmp_path, "app", "show", "hello").stdout
    assert "version:      1.0" in show and "origin:       installed" in show
    assert listed["hello"]["hash"] in show
    assert "main.py (24 B)" in show

    r = lmos(tmp_path, "run", "hello", "a", "b")
    assert r.returncode == 0 and '"a"' in r.stdout and '"b"' in r.stdout, r.stderr

    # upgrades from the command line: same version with other content needs --force
    make(tmp_path / "hello", {"main.py": "result = 'changed'\n"})
    r = lmos(tmp_path, "app", "install", code, "--grant")
    assert r.returncode == 1 and r.stderr.startswith("lmos: EEXIST: hello 1.0 has other content")
    r = lmos(tmp_path, "app", "install", code, "--force")
    assert r.returncode == 0 and r.stdout.startswith("reinstalled hello 1.0 -> 1.0")

    r = lmos(tmp_path, "app", "remove", "hello")
    assert r.returncode == 0 and r.stdout == "removed hello 1.0\n"
    r = lmos(tmp_path, "app", "remove", "hello")
    assert r.returncode == 1 and r.stderr == "lmos: ENOENT: no installed app hello\n"
    r = lmos(tmp_path, "app", "show", "hello")
    assert r.returncode == 1 and r.stderr.startswith("lmos: ENOENT:")


def test_bad_input_is_one_line_and_installs_nothing(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    evil = make(tmp_path / "evil", {"app.toml": CODE.format(v="1.0"), "main.py": "result = 1\n"})
    (Path(evil) / "data.txt").symlink_to(tmp_path / "outside.txt")
    typo = make(tmp_path / "typo", {"app.toml": "name = 'typo'\ncapabilites = ['llm']\n"})
    broken = make(tmp_path / "broken", {"app.toml": CODE.format(v="1.0"), "main.py": "def f(:\n"})
    py = make(tmp_path / "py",
              {"app.toml": "name = 'py'\n[entry]\nkind = 'python'\nfunction = 'os:getcwd'\n"})
    chat = make(tmp_path / "chat", {"app.toml": "name = 'chat'\n"})
    cases = [(evil, "EINVAL", "symlinks are not allowed"), (typo, "EINVAL", "capabilites"),
             (broken, "EINVAL", "main.py: line 1"), (py, "EPERM", "--trusted"), (chat, "EEXIST", "built-in"),
             (str(tmp_path / "missing"), "ENOENT", "missing")]
    for path, errno, needle in cases:
        r = lmos(tmp_path, "app", "install", path, "--grant")
        assert r.returncode == 1 and r.stdout == "", (path, r.stdout)
        assert r.stderr.startswith(f"lmos: {errno}: ") and needle in r.stderr, (path, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    apps = json.loads(lmos(tmp_path, "app", "list", "--json").stdout)["apps"]
    assert [a["name"] for a in apps if a["origin"] == "installed"] == []
    # the operator may allow in-process Python explicitly
    r = lmos(tmp_path, "app", "install", py, "--grant", "--trusted")
    assert r.returncode == 0, r.stderr


def test_commands_reach_a_running_kernel(tmp_path: Path) -> None:
    """With lmosh up on the state directory the install goes through its control socket, and the
    shell can run the app at once; removing it while it runs needs --force."""
    state = tmp_path / "state"
    state.mkdir()
    code = make(tmp_path / "hello", {"app.toml": CODE.format(v="1.0"),
                                     "main.py": "sleep(seconds=float(argv[0]))\nresult = 'slept'\n"})
    sh = spawn_shell(state)
    try:
        r = lmos(tmp_path, "app", "install", code, "--grant")
        assert r.returncode == 0, r.stderr
        sh.sendline("run hello 0")
        sh.expect("slept")
        sh.expect(PROMPT)
        sh.sendline("run hello 30 &")
        sh.expect(r"\[1\] (\d+)")
        pid = sh.match.group(1)
        sh.expect(PROMPT)
        r = lmos(tmp_path, "app", "remove", "hello")
        assert r.returncode == 1 and r.stderr.startswith(f"lmos: EBUSY: hello is running (pid {pid})")
        r = lmos(tmp_path, "app", "remove", "hello", "--force")
        assert r.returncode == 0 and "1 running process(es) keep it" in r.stdout
        sh.sendline(f"kill {pid}")
        sh.expect(PROMPT)
        sh.sendline("run hello 0")
        sh.expect("ENOENT")
        sh.expect(PROMPT)
        ctrl_d(sh)
    finally:
        if sh.isalive():
            sh.terminate(force=True)
    assert not isinstance(sh.exitstatus, type(pexpect.TIMEOUT))
