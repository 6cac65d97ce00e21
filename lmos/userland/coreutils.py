"""Small Unix-style utility apps: ``echo``, ``sleep``, ``generate``.

They exist for the same reason as their Unix namesakes: scripting and
testing the system (jobs, signals, pipes of work) without a model in the loop.
"""

from __future__ import annotations

import json
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.syscalls.table import AppSpec


async def echo_main(sys: Any, argv: list[str]) -> str:
    """Write the arguments, space-separated, to the process output."""
    text = " ".join(argv)
    await sys.call("write", text=text)
    return text


async def sleep_main(sys: Any, argv: list[str]) -> float:
    """Sleep for argv[0] seconds (interruptible: SIGINT ends it with EINTR)."""
    try:
        seconds = float(argv[0]) if argv else 1.0
    except ValueError:
        raise SyscallError(Errno.EINVAL, f"sleep: bad number {argv[0]!r}") from None
    await sys.sleep(seconds)
    return seconds


async def generate_main(sys: Any, argv: list[str]) -> Any:
    """Generate from a prompt: ``generate [--max-tokens N] [--temperature T] PROMPT...``."""
    args: dict[str, Any] = {}
    words = list(argv)
    while words and words[0].startswith("--") and len(words) > 1:
        key = words.pop(0)[2:].replace("-", "_")
        value = words.pop(0)
        args[key] = json.loads(value) if value.replace(".", "", 1).isdigit() else value
    # what a user types (or pipes in) is text: "<|end|>" in it is characters, not the control token
    args["segments"] = [(" ".join(words), True)]
    r = await sys.llm_generate(**args)
    return r.text


APPS = [
    AppSpec("echo", echo_main, frozenset(), description="write the arguments to the output"),
    AppSpec("sleep", sleep_main, frozenset(), description="sleep for N seconds"),
    AppSpec("generate", generate_main, frozenset({"llm"}),
            description="generate text from a prompt (--max-tokens N, --temperature T)"),
]
