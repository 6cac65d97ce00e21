"""``chat_format`` (syscall 70): how the caller's model wants conversations rendered.

The agent loop must speak its model's chat format, and only the kernel can
see the model's tokenizer.  So the kernel inspects it: a tokenizer with lmos's
own markers as single tokens (the built-in model) gets ``"lmos"``; one whose
chat template knows about tools (Qwen2, Hermes ...) gets ``"template"`` and
the rendering done by ``apply_chat_template``; anything else (the scripted test
driver, plain models) gets ``"lmos"`` rendered as text.

A template rendering also comes back as ``segments`` (see :mod:`lmos.chatformat`):
control-token strings inside the messages and tool schemas are marked before
the template runs, so they come out as *data* segments, which ``llm_generate``
tokenizes as plain text, while the control tokens the template writes itself
stay framing.  Roles must be plain words, since templates paste them into
markers (``'<|' + role + '|>'``).  Tool declarations are checked by the chat
format's rules (:func:`lmos.chatformat.validate_tools`) for either format: a
bad schema is EINVAL naming the field, never a template's own error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta

from lmos.chatformat import CALL, mark_controls, segments_text, split_marked, validate_tools
from lmos.drivers.base import control_tokens
from lmos.errors import Errno, SyscallError
from lmos.syscalls.registry import syscall
from lmos.syscalls.types import Req, Resp

if TYPE_CHECKING:
    from lmos.syscalls.table import Ctx


class ChatFormat(Req):
    messages: Annotated[list[dict[str, Any]], Meta(max_length=1 << 16)] | None = None  # template models only
    tools: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = True


class ChatFormatReply(Resp):
    format: str  # "lmos" | "template"
    # lmos format only: whether the model was trained on the system turn's ``Tools:`` block (chat
    # format v2).  A v1 model never saw one, so the agent loop does not show it one.
    declares_tools: bool = True
    text: str = ""  # the rendering, when messages were given and format is "template"
    bos: str = ""  # text of the BOS token a fresh context should start with, if any
    # the rendering as (text, is_data) pieces for llm_generate(segments=...): joined, they are ``text``
    segments: list[tuple[str, bool]] = msgspec.field(default_factory=list)


_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


def detect(tokenizer: Any) -> str:
    hf = getattr(tokenizer, "hf", None)
    if hf is None:
        return "lmos"
    if len(tokenizer.encode(CALL)) == 1:
        return "lmos"
    template = getattr(hf, "chat_template", None) or ""
    return "template" if isinstance(template, str) and "tool" in template else "lmos"


def declares_tools(tokenizer: Any) -> bool:
    """Whether an lmos-format model reads tool declarations: its shipped chat template renders the
    ``Tools:`` block (chat format v2).  Without a transformers tokenizer (scripted drivers) it does."""
    hf = getattr(tokenizer, "hf", None)
    template = getattr(hf, "chat_template", None) if hf is not None else None
    return hf is None or not isinstance(template, str) or "Tools:" in template


@syscall(70, "chat_format", ChatFormat, ChatFormatReply, cap="llm")
async def sys_chat_format(ctx: Ctx, req: ChatFormat) -> ChatFormatReply:
    """The chat format of the caller's model, and (for template models) a rendering of ``messages``."""
    if req.tools is not None:  # EINVAL naming the wrong field, whichever format renders them
        validate_tools(req.tools)
    tok = ctx.kernel.scheduler(ctx.proc.model).driver.tokenizer
    fmt = detect(tok)
    hf = getattr(tok, "hf", None)
    bos = str(getattr(hf, "bos_token", None) or "") if hf is not None else ""
    if fmt != "template" or req.messages is None or hf is None:
        return ChatFormatReply(format=fmt, bos=bos, declares_tools=declares_tools(tok))
    for m in req.messages:
        role = m.get("role")
        if isinstance(role, str) and not _ROLE.fullmatch(role):
            raise SyscallError(Errno.EINVAL, f"bad chat role {role[:40]!r} (a plain word)")
    controls = getattr(tok, "controls", None) or control_tokens(hf)[0]
    messages, tools = req.messages, req.tools or None
    if controls is not None:
        messages, tools = mark_controls(messages, controls), mark_controls(tools, controls)
    try:
        text = hf.apply_chat_template(
            messages,
            tools=tools,
            tokenize=False,
            add_generation_prompt=req.add_generation_prompt,
        )
    except Exception as exc:  # a template error is the caller's bad input
        raise SyscallError(Errno.EINVAL, f"chat template failed: {type(exc).__name__}: {exc}") from None
    segments = split_marked(str(text))
    return ChatFormatReply(format=fmt, text=segments_text(segments), bos=bos, segments=segments)
