"""The state of the system: processes, apps, models, memory, traces; help and exit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lmos.userland.shell.jobs import pid_arg
from lmos.userland.shell.render import render_result, to_builtins

if TYPE_CHECKING:
    from lmos.userland.shell.core import Command, Shell

HELP = """\
ps | top [-n N]      the process table; a live view (q or Ctrl-C leaves it; -n N: N refreshes, printed)
apps | models        installed apps; loaded models
mem PID | logs PID   context memory of a process; its syscall trace
help | exit          this text; leave (Ctrl-D works too)"""


async def cmd_ps(sh: Shell, args: list[str], line: str) -> None:
    sh.out(f"{'PID':>6} {'PPID':>6} {'UID':>5} {'STATE':<8} {'PROMPT':>7} {'GEN':>7} {'WALL':>7}  APP")
    for p in await sh.sys.ps():
        u = p.usage
        sh.out(f"{p.pid:>6} {p.ppid:>6} {p.uid:>5} {p.state:<8} {u.prompt_tokens:>7} "
               f"{u.completion_tokens:>7} {u.wall_seconds:>6.1f}s  {' '.join([p.app, *p.argv])[:60]}")


async def cmd_top(sh: Shell, args: list[str], line: str) -> None:
    from lmos.userland.shell.top import top

    await top(sh, args)


async def cmd_apps(sh: Shell, args: list[str], line: str) -> None:
    for a in (await sh.sys.call("app_list")).apps:
        sh.out(f"{a.name:<20} {a.description}")


async def cmd_models(sh: Shell, args: list[str], line: str) -> None:
    for m in (await sh.sys.call("model_list")).models:
        sh.out(f"{m.name:<12} {m.driver:<12} window {m.max_model_len} tokens, KV {m.free_blocks}/"
               f"{m.num_blocks} blocks free (x{m.block_size}), {m.runnable} runnable, "
               f"{m.tokens} tokens in {m.steps} steps")
        if m.tuning:
            sh.out(f"{'':<12} limits: {m.tuning}")


MAX_PAGE_ROWS = 40  # a page table longer than a screen is summarised


def mem_view(st: dict[str, Any], *, width: int = 100, color: bool = False) -> str:
    """``mem_stat`` as a person reads it: the window, a table of where the context's pages and
    tokens are, what the pager has done, the KV cache, then the page table."""
    lines = [f"process {st['pid']}: "]
    if not st["paged"]:
        lines[0] += "no context memory (it has not generated with paging)"
    else:
        lines[0] += (f"window {st['window']} tokens ({st['reserve']} kept for replies), "
                     f"{st['window_tokens']} in use; evicts above {st['high_watermark']} "
                     f"down to {st['low_watermark']}")
        rows = [{"context": "resident", "pages": st["resident_pages"], "tokens": st["resident_tokens"]},
                {"context": "swapped out", "pages": st["swapped_pages"], "tokens": st["swapped_tokens"]},
                {"context": "pinned", "pages": st["pinned_pages"], "tokens": None},
                {"context": "stubs", "pages": None, "tokens": st["stub_tokens"]},
                {"context": "core memory", "pages": None, "tokens": st["core_tokens"]}]
        lines += ["", render_result(rows, width=width, color=color), "",
                  f"turns {st['turns']}, evictions {st['evictions']} ({st['pages_evicted']} pages), "
                  f"page-ins {st['page_ins']}, recalls {st['recalls']}; prefilled {st['prefill_tokens']} "
                  f"tokens ({st['reprefill_tokens']} again after eviction)"]
    kv = st["kv_location"]
    recompute = st["kv_recompute_tokens"]
    lines.append("KV cache: none" if kv == "none" else
                 f"KV cache: {st['kv_blocks']} blocks on the {kv}"
                 + (f", {st['kv_swap_bytes']} bytes swapped" if st["kv_swap_bytes"] else "")
                 + (f", {recompute} tokens to recompute" if recompute else ""))
    pages = [{"page": p["id"], "role": p["role"], "tokens": p["tokens"], "state": p["state"],
              "pinned": "yes" if p["pinned"] else "", "last use": p["last_use"], "title": p["title"]}
             for p in st.get("page_table") or []]
    if pages:
        lines += ["", render_result(pages[:MAX_PAGE_ROWS], width=width, color=color)]
        if len(pages) > MAX_PAGE_ROWS:
            lines.append(f"... and {len(pages) - MAX_PAGE_ROWS} more pages")
    return "\n".join(lines)


async def cmd_mem(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "mem")
    if pid is not None:
        st = to_builtins(await sh.sys.call("mem_stat", pid=pid, pages=True))
        sh.show(mem_view(st, width=sh.term.width, color=sh.term.color))


async def cmd_logs(sh: Shell, args: list[str], line: str) -> None:
    pid = pid_arg(sh, args, "logs")
    if pid is None:
        return
    for t in await sh.sys.trace(pid, 50):
        mark = "ok" if t.ok else f"{t.error or t.errno}"
        sh.out(f"{time.strftime('%H:%M:%S', time.localtime(t.ts))} {t.name:<14} {t.duration_us:>8}us  "
               f"{mark}")


async def cmd_help(sh: Shell, args: list[str], line: str) -> None:
    from lmos.userland.shell.core import help_text

    sh.out(help_text())


async def cmd_exit(sh: Shell, args: list[str], line: str) -> None:
    sh.running = False
    if args and args[0].lstrip("-").isdigit():
        sh.status = int(args[0])


COMMANDS: dict[str, Command] = {"ps": cmd_ps, "top": cmd_top, "apps": cmd_apps, "models": cmd_models,
                                "mem": cmd_mem, "logs": cmd_logs, "help": cmd_help,
                                "exit": cmd_exit}
