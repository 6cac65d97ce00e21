"""``top`` for lmosh: a live view of processes, token rates, KV blocks and context pages.

Every figure comes from syscalls (ps, model_list, mem_stat), refreshed once a
second.  On a terminal that offers a live screen (``Terminal.live``, rich's
Live in the prompt_toolkit terminal) the view redraws in place until ``q`` or
Ctrl-C; otherwise, and with ``-n N`` (for scripts and tests), each refresh is
printed below the last, N times.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from lmos.errors import SyscallError
from lmos.userland.shell.termsafe import neutralize

if TYPE_CHECKING:
    from lmos.userland.shell.core import Shell

QUIT_KEYS = ("q", "Q", "c-c")  # c-c: Ctrl-C, which arrives as a key while the live screen reads keys


async def _mem(sys: Any, pid: int) -> tuple[str, str]:
    try:
        st = await sys.call("mem_stat", pid=pid)
    except SyscallError:
        return "-", "-"
    kv = getattr(st, "kv_blocks", None)
    pages = getattr(st, "resident_pages", None)
    swapped = getattr(st, "swapped_pages", None)
    kv_s = "-" if kv is None else str(kv)
    pages_s = "-" if pages is None else f"{pages}+{swapped or 0}"
    return kv_s, pages_s


class _Rates:
    """Tokens per second of each process between two frames."""

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.t = time.monotonic()

    async def frame(self, sh: Shell, hint: str = "") -> str:
        procs = await sh.sys.ps()
        now = time.monotonic()
        dt = max(now - self.t, 1e-6)
        models = (await sh.sys.call("model_list")).models
        lines = [f"top - {time.strftime('%H:%M:%S')}  {len(procs)} processes{hint}"]
        for m in models:
            lines.append(f"model {m.name}: {m.runnable} runnable, KV {m.num_blocks - m.free_blocks}/"
                         f"{m.num_blocks} blocks used")
        lines.append(f"{'PID':>6} {'STATE':<8} {'TOK/S':>8} {'GEN':>7} {'KV':>6} {'PAGES':>7}  APP")
        for p in procs:
            gen = p.usage.completion_tokens
            rate = (gen - self.last.get(p.pid, gen)) / dt
            self.last[p.pid] = gen
            kv, pages = await _mem(sh.sys, p.pid)
            lines.append(f"{p.pid:>6} {p.state:<8} {rate:>8.1f} {gen:>7} {kv:>6} {pages:>7}  {p.app}")
        self.t = now
        return "\n".join(lines)


async def top(sh: Shell, args: list[str]) -> None:
    count = 0
    if args:
        if len(args) != 2 or args[0] != "-n" or not args[1].isdigit():
            sh.err("usage: top [-n N]")
            return
        count = int(args[1])
    live = getattr(sh.term, "live", None)
    if count or live is None:
        await _printed(sh, count)
        return
    rates = _Rates()
    sh.term.take_interrupt()
    async with live() as screen:
        while True:
            screen.update(neutralize(await rates.frame(sh, "  (q quits)")))
            key = await screen.key(1.0)
            if key in QUIT_KEYS or sh.term.take_interrupt():
                return


async def _printed(sh: Shell, count: int) -> None:
    """Frames one after another: ``count`` of them, or until Ctrl-C when ``count`` is 0."""
    rates = _Rates()
    n = 0
    while True:
        sh.out(await rates.frame(sh))
        n += 1
        if count and n >= count:
            return
        with anyio.move_on_after(1.0):
            while True:
                if sh.term.take_interrupt():
                    return
                await anyio.sleep(0.05)
        sh.out("")
