"""``lmos replay PID``: a process step by step from its syscall journal, verified.

Like ``lmos audit`` it works whether or not a kernel is running
(:mod:`lmos.cli.statedir`) and asks as the user who runs it, through the
``proc_replay`` syscall (:mod:`lmos.syscalls.replay`): a user replays their own
processes, the operator anyone's.  ``--live`` generates again on the current
model; with no kernel running that loads ``--model`` (default the built-in
model) for the command.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from lmos.cli import ModelOpt, StateOpt, app, fail, model_of, state_dir_of
from lmos.errors import SyscallError


def _replay(state_dir: str, live: bool, model: str | None, args: dict[str, Any]) -> Any:
    from lmos.cli import statedir

    if not live or statedir.running(state_dir):
        return statedir.syscall_on(state_dir, "proc_replay", **args)
    from anyio.from_thread import start_blocking_portal

    from lmos.cli.local import open_local

    with start_blocking_portal() as portal:  # no kernel: one in this process, with a model for --live
        cm = portal.wrap_async_context_manager(open_local(state_dir, model_of(model), kind="lmos",
                                                          as_root=statedir.as_root()))
        with cm as conn:
            return portal.call(lambda: conn.call("proc_replay", **args))


def _clip(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[:n - 3] + "..."


def render(r: dict[str, Any], full: bool) -> None:
    from lmos.userland.shell.termsafe import neutralize  # arguments and outputs are what a program wrote

    out = sys.stdout
    n = r["total_steps"]
    out.write(f"pid {r['pid']} {neutralize(r['app'])} (uid {r['uid']}, {r['state']}, exit status "
              f"{r['exit_status']}): {n} step{'' if n == 1 else 's'}\n")
    for s in r["steps"]:
        when = datetime.fromtimestamp(s["ts"]).strftime("%H:%M:%S.%f")[:-3]
        res = s["result"] if s["ok"] else f"{s['errname']}: {s['error']}"
        mark = {"match": "=", "diverged": "!", "not reached": "?"}.get(s["rerun"], " ")
        out.write(f"{mark} {s['step']:>4} {when} {neutralize(s['name']):<14} {s['decision']:<5} "
                  f"{s['duration_us']:>8}us  {neutralize(_clip(s['args']))} -> {neutralize(_clip(res))}\n")
        if s["name"] == "llm_generate" and s["output"] is not None:
            ctx = s.get("context_text")
            if ctx is not None:
                shown = ctx if full or len(ctx) <= 400 else "..." + ctx[-400:]
                out.write(f"       context ({len(s['context'] or [])} tokens, {s['context_check']}): "
                          f"{neutralize(shown)!r}\n")
            elif s.get("context") is not None:  # no model loaded here to turn the tokens into text
                ids = s["context"]
                shown = ids if full or len(ids) <= 32 else ["...", *ids[-32:]]
                out.write(f"       context ({len(ids)} tokens, {s['context_check']}; no model loaded to show "
                          f"them as text): {shown}\n")
            elif s["context_check"]:
                out.write(f"       context: {s['context_check']}\n")
            if r["live"]:
                if s["live_error"]:
                    out.write(f"       live: {neutralize(s['live_error'])}\n")
                elif s["live_differs_at"] is None:
                    out.write("       live: the current model gives the same output\n")
                else:
                    out.write(f"       live: differs at token {s['live_differs_at']}: "
                              f"{neutralize(_clip(s['live_text'] or s['live_output'], 200))!r}\n")
    if r["total_steps"] > len(r["steps"]):
        out.write(f"({r['total_steps'] - len(r['steps'])} more steps: raise --limit)\n")
    if r["verified"]:
        out.write("verified: re-running the program against its journal reproduces every step\n")
    elif r["diverged_at"] is not None:
        out.write(f"NOT verified: first difference at step {r['diverged_at']}: {neutralize(r['reason'])}\n")
    else:
        out.write(f"not re-run: {neutralize(r['rerun'])}\n")
    if r["live"]:
        where = r["live_differs_at"]
        out.write("live: every generation is the same on the current model\n" if where is None else
                  f"live: the current model first differs at step {where}\n")


@app.command()
def replay(pid: Annotated[int, typer.Argument(help="the process to replay")],
           live: Annotated[bool, typer.Option("--live", help="generate again on the current model and show "
                                              "where the output differs")] = False,
           rerun: Annotated[bool, typer.Option("--rerun/--no-rerun", help="re-run the program against its "
                                               "journal to verify it")] = True,
           full: Annotated[bool, typer.Option("--full", help="whole contexts, not their last 400 "
                                              "characters")] = False,
           limit: Annotated[int, typer.Option("--limit", help="steps shown (all are verified)")] = 10_000,
           as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
           model: ModelOpt = None, state_dir: StateOpt = None) -> None:
    """A process step by step from its syscall journal: each syscall with its arguments, result, time and
    capability decision, each generation with the context the model saw; verified by re-running its
    program against the journal.  Your own processes; the operator's: anyone's."""
    args: dict[str, Any] = {"pid": pid, "live": live, "rerun": rerun, "limit": limit}
    try:
        reply = _replay(state_dir_of(state_dir), live, model, args)
    except SyscallError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(reply))
        return
    render(reply, full)


def ps_all(state_dir: str, as_json: bool) -> None:
    """``lmos ps --all``: the processes table of the state directory (``proc_history``)."""
    from lmos.cli import statedir
    from lmos.userland.shell.termsafe import neutralize

    try:
        procs = statedir.syscall_on(state_dir, "proc_history")["procs"]
    except SyscallError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(procs))
        return
    print(f"{'PID':>6} {'PPID':>6} {'UID':>6} {'STATE':<8} {'STATUS':>6} {'STEPS':>6}  {'RECOVERED':<18} "
          "APP / ERROR")
    for p in procs:
        rec = f"{p['recovered']}x, at step {p['recovered_at']}" if p["recovered"] else ""
        status = "" if p["exit_status"] is None else str(p["exit_status"])
        tail = neutralize(p["app"]) + (f"  ({neutralize(p['error'])})" if p["error"] else "")
        print(f"{p['pid']:>6} {p['ppid']:>6} {p['uid']:>6} {p['state']:<8} {status:>6} {p['steps']:>6}  "
              f"{rec:<18} {tail}")
