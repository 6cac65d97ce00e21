"""A tool declaration with an invalid schema is refused naming the wrong field, through the kernel's
``chat_format`` syscall, for the lmos format and for a template model alike (HTTP: test_openai_tools)."""

from __future__ import annotations

from typing import Any

import pytest
from kutil import kernel
from test_agent import TemplateTokenizer

from lmos.drivers.scripted import ScriptedDriver
from lmos.errors import Errno, SyscallError
from lmos.syscalls.client import Sys

pytestmark = pytest.mark.anyio

BAD = [{"name": "weather", "description": "The weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "strng"}}}}]
GOOD = [{"name": "weather", "description": "The weather.",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("template", [False, True])
async def test_chat_format_refuses_a_bad_declaration_naming_the_field(template: bool) -> None:
    drv = ScriptedDriver()
    if template:
        drv.tokenizer = TemplateTokenizer()  # type: ignore[assignment]

    async def prog(sys: Sys, argv: list[str]) -> Any:
        msgs = [{"role": "user", "content": "weather in Oslo?"}]
        ok = await sys.call("chat_format", messages=msgs, tools=GOOD)
        try:
            await sys.call("chat_format", messages=msgs, tools=BAD)
        except SyscallError as e:
            return [ok.format, e.errno.name, e.message]
        return [ok.format, None, None]

    async with kernel(drv) as k:
        w = await k.wait(await k.spawn(prog, caps=["llm"]))
    fmt, errno, message = w.result
    assert fmt == ("template" if template else "lmos")
    assert errno == Errno.EINVAL.name
    assert message.startswith("tools[0].parameters.properties.city.type: unknown type 'strng'"), message
