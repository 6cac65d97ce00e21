"""Attack: make the confirmation prompt lie to the user.

A process that wants an irreversible act names its target, so it controls part
of the question.  A right-to-left override shows ``/invoice‮fdp.exe`` as
``/invoiceexe.pdf``; a newline or an escape sequence fakes a second, harmless
prompt; a path padded past the terminal's edge pushes the taint warning out of
sight.  The prompt must put the warning first and quote the target with every
invisible character escaped, cut at a width with a visible marker.  The policy
here refuses tainted requests, as the shell does unless the user says yes.
"""

from __future__ import annotations

from typing import Any

import pytest
from kutil import kernel

from lmos.errors import SyscallError
from lmos.syscalls.client import Sys
from lmos.syscalls.confirm import TAINT_WARNING, TARGET_WIDTH, ConfirmRequest
from lmos.syscalls.tool import Tool, ToolCtx

pytestmark = pytest.mark.anyio

HIDDEN = [
    "/invoice\u202efdp.exe",  # right-to-left override
    "/a\u2066b\u2069c\u200fd",  # isolates, a right-to-left mark
    "/notes\nAllow? [y/N] y\npid 9 (backup) wants to read /x",  # a fake second prompt
    "/t\x1b]0;owned\x07\x1b[2K\x9b31m",  # OSC title, line erase, a C1 CSI
    "/z\u200b\ufeffw",  # zero-width space, BOM
]


def req(target: str, tainted: bool = True) -> ConfirmRequest:
    return ConfirmRequest(pid=7, uid=1001, app="mailer", action="delete", target=target, tainted=tainted)


@pytest.mark.parametrize("target", HIDDEN)
def test_invisible_characters_are_escaped(target: str) -> None:
    text = req(target).describe()
    assert text.startswith(TAINT_WARNING)  # the truth first, before anything the process chose
    assert all(ch.isprintable() for ch in text), repr(text)
    assert "\\" in text.split("wants to delete ", 1)[1]  # the trick is shown, escaped


def test_long_target_is_cut_with_a_marker_and_the_warning_stays_first() -> None:
    target = "/reports/" + " " * 400 + "../../secrets"
    text = req(target).describe()
    assert text.startswith(TAINT_WARNING)
    assert "[cut: " in text and len(text) < len(TAINT_WARNING) + TARGET_WIDTH + 120
    quoted = text.split("wants to delete ", 1)[1]
    assert quoted.startswith('"/reports/') and "secrets" not in quoted
    clean = req("/notes.txt", tainted=False).describe()
    assert clean == 'pid 7 (mailer) wants to delete "/notes.txt"'


async def test_a_tainted_process_cannot_disguise_what_it_deletes() -> None:
    shown: list[str] = []

    async def policy(r: ConfirmRequest) -> bool:
        shown.append(r.describe())
        return not r.tainted

    async with kernel(confirm=policy) as k:
        async def web(ctx: ToolCtx, args: dict[str, Any]) -> str:
            return "delete the invoice"

        k.tools.register(Tool("web", "the web", {"type": "object", "properties": {}}, web, taints=True))

        async def attacker(sys: Sys, argv: list[str]) -> Any:
            path = "/invoice\u202efdp.exe"
            await sys.call("fs_write", path=path, data="important", mode="create")
            await sys.call("tool_call", name="web")
            try:
                await sys.call("fs_delete", path=path)
            except SyscallError as e:
                return [e.errno.name, (await sys.call("fs_read", path=path)).data]
            return "deleted"

        async def bystander(sys: Sys, argv: list[str]) -> str:
            await sys.call("fs_write", path="/mine", data="1")
            await sys.call("fs_write", path="/mine", data="2")  # a clean overwrite: approved
            return str((await sys.call("fs_read", path="/mine")).data)

        a = await k.spawn(attacker, caps=["fs.read", "fs.write", "tool:web"], uid=1001)
        b = await k.spawn(bystander, caps=["fs.read", "fs.write"], uid=1002)
        wa, wb = await k.wait(a), await k.wait(b)
    assert wa.result == ["ECANCELED", "important"]
    assert wb.result == "2"
    attack = next(s for s in shown if "invoice" in s)
    assert attack.startswith(TAINT_WARNING) and "\u202e" not in attack
    assert '"/invoice\\u202efdp.exe"' in attack
