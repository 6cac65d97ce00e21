"""The ``ask`` and ``agent`` helpers of sandboxed programs: lmos's agent loop, run inside the worker.

A code app should not have to re-implement the agent loop (chat formats, tool
call parsing, observations) to use the model, nor could it: the loop is
trusted code.  So the worker imports ``lmos.userland.agent`` before it locks
itself down and exposes two plain functions that run it over the worker's own
syscall channel.  Every ``llm_generate``, ``chat_format``, ``tool_list`` and
``tool_call`` the loop makes is an ordinary syscall of the app's process,
counted against the run's syscall budget and checked by the kernel against the
app's capabilities, exactly as if the program had made it itself.

What crosses between the program and the loop is plain JSON data, copied both
ways (``to_json``): the loop never holds one of the program's objects (whose
methods it would call with trusted frames on the stack), and the program only
ever gets back dicts, lists, strings and numbers.  Errors cross as the
sandbox's ``SyscallError``; any other failure of the loop becomes a fresh
``RuntimeError`` that carries only its message.

The worker's syscalls are synchronous, so the loop's coroutines never really
suspend: :func:`drive` runs one to completion with a single ``send``.

The seed apps must prompt the model with exactly the wording it was trained
on, which lives in ``lmos.taskprompts`` (trusted, shared with the training
corpus).  A program gets the chosen functions of that module listed in
:data:`TASK_PROMPTS` (and the constants in :data:`TASK_CONSTANTS`) as plain
functions, never the module: arguments and results are copied as JSON data
the same way, so the trusted code never calls back into one of the program's
objects.

Like the policy, this module is loaded inside the worker by file path and
imports only the standard library at import time.
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:
    from lmos.userland.sandbox_policy import SyscallError, to_json
else:  # inside the worker, loaded by path like the policy
    from sandbox_policy import SyscallError, to_json

MAX_ARGS = 4 << 20  # bytes of messages and options a helper call may carry
Call = Callable[[str, dict[str, Any]], Any]  # the worker's syscall: (name, args) -> reply or SyscallError
# lmos.taskprompts functions and constants a program may use (the seed apps' prompts)
TASK_PROMPTS = ("support_messages", "is_handoff", "sentiment_messages", "parse_sentiment",
                "recommend_messages", "item_line", "team_plan_messages", "parse_plan",
                "team_combine_messages",
                "give_up_text", "admits_failure")
TASK_CONSTANTS = ("SUPPORT_HANDOFF",)


class Loaded:
    """The agent module and ``lmos.errors`` once imported (or why they could not be)."""

    agent: Any = None
    errors: Any = None
    msgspec: Any = None
    prompts: Any = None  # lmos.taskprompts
    problem = "the agent loop was not loaded in this worker"


def load(userland_dir: str) -> None:
    """Import ``lmos.userland.agent`` without running ``lmos/__init__.py``, which would
    start pulling in the whole system: ``lmos`` and ``lmos.userland`` become bare
    package stubs over their folders, so only the agent module and what it imports
    (the chat format, the task prompts, ``lmos.errors``, msgspec) are loaded.  Call
    before lock-down."""
    import importlib

    for name, path in (("lmos", os.path.dirname(userland_dir)), ("lmos.userland", userland_dir)):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
    try:
        Loaded.agent = importlib.import_module("lmos.userland.agent")
        Loaded.errors = importlib.import_module("lmos.errors")
        Loaded.msgspec = importlib.import_module("msgspec")
        Loaded.prompts = importlib.import_module("lmos.taskprompts")
    except Exception as exc:  # the worker still serves plain programs
        Loaded.agent = Loaded.prompts = None
        Loaded.problem = f"the agent loop failed to load: {type(exc).__name__}: {exc}"


class _Reply(dict[str, Any]):
    """A syscall reply as the loop expects it: ``reply.text`` reads ``reply["text"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _view(value: Any) -> Any:
    if type(value) is dict:
        return _Reply({k: _view(v) for k, v in value.items()})
    if type(value) is list:
        return [_view(v) for v in value]
    return value


class SyncSys:
    """The ``sys`` the agent loop is given: each syscall completes before its await
    returns.  Failures are raised as ``lmos.errors.SyscallError``, which is what
    the loop catches (a refused tool call is an observation, not the end)."""

    def __init__(self, call: Call) -> None:
        self._call = call

    async def call(self, name: str, /, **args: Any) -> Any:
        plain = json.loads(json.dumps(args))  # replies the loop passes back on are _Reply dicts
        try:
            return _view(self._call(name, plain))
        except SyscallError as exc:
            errors = Loaded.errors
            errno = errors.Errno.__members__.get(exc.errno, errors.Errno.EIO)
            raise errors.SyscallError(errno, exc.message) from None

    async def llm_generate(self, prompt: str | None = None, **args: Any) -> Any:
        if prompt is not None:
            args["prompt"] = prompt
        return await self.call("llm_generate", **args)


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion; it may await only syscalls of a :class:`SyncSys`."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the agent loop waited on something other than a syscall")


def _plain(value: Any, what: str) -> Any:
    try:
        return to_json(value, MAX_ARGS)[0]
    except (ValueError, RecursionError) as exc:
        raise TypeError(f"{what} must be JSON values ({exc})") from None


def _messages(messages: Any) -> list[dict[str, Any]]:
    msgs = _plain(messages, "messages")
    if type(msgs) is not list or not all(type(m) is dict for m in msgs):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    return msgs


def _run(what: str, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run the loop and hand back only plain data or a sandbox-side exception."""
    if Loaded.agent is None:
        raise SyscallError("ENOSYS", Loaded.problem, 38)
    errors = Loaded.errors
    try:
        value = drive(make())
    except errors.SyscallError as exc:
        raise SyscallError(exc.errno.name, exc.message, int(exc.errno)) from None
    except SyscallError:
        raise
    except MemoryError:
        raise MemoryError(f"{what}: out of memory") from None
    except (TypeError, ValueError) as exc:
        raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{what}: {exc}") from None
    except Exception as exc:
        raise RuntimeError(f"{what} failed: {type(exc).__name__}: {exc}") from None
    return value


def helpers(call: Call, defaults: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """``ask`` and ``agent`` for one run; ``defaults`` (tools, max_steps, temperature)
    come from the app's manifest and apply where a call does not say."""
    sync = SyncSys(call)

    def ask(messages: Any, **gen: Any) -> str:
        """One model turn on a fresh context, no tools: ``ask([{"role": "user", "content": q}],
        max_tokens=64, temperature=0.0)`` returns the answer text."""
        msgs, opts = _messages(messages), _plain(gen, "options")
        text = _run("ask", lambda: Loaded.agent.ask(sync, msgs, **opts))
        return str(text)

    def agent(messages: Any, tools: Any = None, max_steps: Any = None, **sampling: Any) -> dict[str, Any]:
        """The agent loop with tools: returns ``{text, calls, steps, finish_reason}``.
        ``tools`` None means the manifest's tools; ``max_steps`` None its ``max_steps``."""
        msgs, opts = _messages(messages), _plain(sampling, "options")
        names = _plain(defaults.get("tools") if tools is None else tools, "tools")
        if names is not None and (type(names) is not list or not all(type(t) is str for t in names)):
            raise TypeError("tools must be a list of tool names")
        steps = defaults.get("max_steps", 8) if max_steps is None else max_steps
        if type(steps) is not int:
            raise TypeError("max_steps must be an int")
        if defaults.get("temperature") is not None:
            opts.setdefault("temperature", defaults["temperature"])
        mod = Loaded.agent
        result = _run("agent", lambda: mod.run_agent(sync, msgs, tools=names, max_steps=steps, **opts))
        return dict(_plain(Loaded.msgspec.to_builtins(result), "the agent's result"))

    return {"ask": ask, "agent": agent, **task_prompts()}


def _prompt_function(name: str) -> Callable[..., Any]:
    def fn(*args: Any, **kwargs: Any) -> Any:
        mod = Loaded.prompts
        if mod is None:
            raise SyscallError("ENOSYS", Loaded.problem, 38)
        plain_args, plain_kwargs = _plain(list(args), "arguments"), _plain(kwargs, "arguments")
        try:
            value = getattr(mod, name)(*plain_args, **plain_kwargs)
        except MemoryError:
            raise MemoryError(f"{name}: out of memory") from None
        except (TypeError, ValueError) as exc:
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{name}: {exc}") from None
        except Exception as exc:
            raise RuntimeError(f"{name} failed: {type(exc).__name__}: {exc}") from None
        return _plain(value, f"{name}'s result")

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = getattr(getattr(Loaded.prompts, name, None), "__doc__", None)
    return fn


def task_prompts() -> dict[str, Any]:
    """The :data:`TASK_PROMPTS` functions and :data:`TASK_CONSTANTS` values for a program
    (nothing if ``lmos.taskprompts`` did not load: the helpers then say why)."""
    if Loaded.prompts is None:
        return {}
    out: dict[str, Any] = {name: _prompt_function(name) for name in TASK_PROMPTS}
    out.update({name: str(getattr(Loaded.prompts, name)) for name in TASK_CONSTANTS})
    return out
