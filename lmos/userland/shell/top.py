"""``top`` for lmosh: a live view of processes, token rates, KV blocks and context pages.

Every figure comes from syscalls (ps, model_list, mem_stat), refreshed once a
second until Ctrl-C (or ``-n N`` refreshes, for scripts and tests).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from lmos.errors import SyscallError

if TYPE_CHECKING:
    from lmos.userland.shell.core import Shell


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


async def top(sh: Shell, args: list[str]) -> None:
    count = 0
    if args:
        if len(args) != 2 or args[0] != "-n" or not args[1].isdigit():
            sh.err("usage: top [-n N]")
            return
        count = int(args[1])
    last: dict[int, int] = {}
    last_t = time.monotonic()
    n = 0
    while True:
        procs = await sh.sys.ps()
        now = time.monotonic()
        dt = max(now - last_t, 1e-6)
        models = (await sh.sys.call("model_list")).models
        lines = [f"top - {time.strftime('%H:%M:%S')}  {len(procs)} processes"]
        for m in models:
            lines.append(f"model {m.name}: {m.runnable} runnable, KV {m.num_blocks - m.free_blocks}/"
                         f"{m.num_blocks} blocks used")
        lines.append(f"{'PID':>6} {'STATE':<8} {'TOK/S':>8} {'GEN':>7} {'KV':>6} {'PAGES':>7}  APP")
        for p in procs:
            gen = p.usage.completion_tokens
            rate = (gen - last.get(p.pid, gen)) / dt
            last[p.pid] = gen
            kv, pages = await _mem(sh.sys, p.pid)
            lines.append(f"{p.pid:>6} {p.state:<8} {rate:>8.1f} {gen:>7} {kv:>6} {pages:>7}  {p.app}")
        last_t = now
        sh.out("\n".join(lines))
        n += 1
        if count and n >= count:
            return
        with anyio.move_on_after(1.0):
            while True:
                if sh.term.take_interrupt():
                    return
                await anyio.sleep(0.05)
        sh.out("")
