"""Request and response types of every syscall (msgspec Structs).

Requests forbid unknown fields and are validated strictly, so a malformed
payload is rejected as EINVAL/EFAULT before any handler runs.  Responses are
plain data: they cross into sandbox workers and the HTTP API as JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

Pid = Annotated[int, Meta(ge=0, le=2**62)]
Seconds = Annotated[float, Meta(ge=0.0, le=1e7)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]


class Req(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request."""


class Resp(msgspec.Struct, kw_only=True):
    """Base of every response."""


class Empty(Resp):
    pass


# -- process ---------------------------------------------------------------
class GetPid(Req):
    pass


class PidInfo(Resp):
    pid: int
    ppid: int
    uid: int


class Exit(Req):
    status: Annotated[int, Meta(ge=-255, le=255)] = 0
    result: Any = None


class Spawn(Req):
    app: Name
    argv: list[Annotated[str, Meta(max_length=1 << 20)]] = []
    model: Name | None = None
    priority: Annotated[int, Meta(ge=-20, le=19)] = 0
    weight: Annotated[float, Meta(gt=0.0, le=1e6)] = 1.0
    caps: list[str] | None = None  # a subset of the caller's; None = the app's
    token_quota: Annotated[int, Meta(ge=1)] | None = None
    uid: Annotated[int, Meta(ge=0)] | None = None  # only root may set another uid
    stream: bool = False  # subscribe the caller to the child's events before it starts (see `events`)
    # pages the child's paged context starts with, pinned (a system prompt, a task); ENOSPC at spawn
    # when they do not fit its model's window (syscalls/mem.py spawn_pins)
    pin: Annotated[list[Annotated[str, Meta(min_length=1, max_length=1 << 20)]], Meta(max_length=64)] = []


class SpawnReply(Resp):
    pid: int


class Wait(Req):
    pid: Pid | None = None
    timeout: Seconds | None = None


class Usage(Resp):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    syscalls: int = 0
    wall_seconds: float = 0.0
    ready_seconds: float = 0.0
    running_seconds: float = 0.0
    blocked_seconds: float = 0.0


class WaitReply(Resp):
    pid: int
    state: str
    exit_status: int
    result: Any = None
    error: str | None = None
    errno: int = 0  # set when a SyscallError ended the process
    usage: Usage = msgspec.field(default_factory=Usage)


class Kill(Req):
    pid: Pid
    signal: Annotated[str, Meta(max_length=16)] | int = "TERM"


class Ps(Req):
    pass


class ProcInfo(Resp):
    pid: int
    ppid: int
    uid: int
    app: str
    argv: list[str]
    model: str
    state: str
    priority: int
    weight: float
    exit_status: int | None
    blocked_on: str
    usage: Usage


class PsReply(Resp):
    procs: list[ProcInfo]


class Sleep(Req):
    seconds: Seconds


class Time(Req):
    pass


class Audit(Req):
    event: Annotated[str, Meta(min_length=1, max_length=160)]
    detail: Annotated[str, Meta(max_length=4096)] = ""


class TimeReply(Resp):
    wall: float
    monotonic: float


class Trace(Req):
    pid: Pid | None = None  # None = the caller
    limit: Annotated[int, Meta(ge=1, le=100_000)] = 100


class TraceEntry(Resp):
    ts: float
    pid: int
    uid: int
    name: str
    digest: str
    ok: bool
    errno: int
    error: str
    duration_us: int


class TraceReply(Resp):
    entries: list[TraceEntry]


# -- llm ---------------------------------------------------------------------
# (text, is_data): framing is tokenized with the model's special tokens, data as plain text
PromptSegment = tuple[Annotated[str, Meta(max_length=1 << 24)], bool]
MAX_CHOICES = 16  # llm_generate n
MAX_PROMPT_CHARS = 1 << 24


class LlmGenerate(Req):
    prompt: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)] | None = None
    # a rendering whose data parts (messages, tool results, files) must never become control tokens
    segments: Annotated[list[PromptSegment], Meta(max_length=1 << 16)] | None = None
    token_ids: list[Annotated[int, Meta(ge=0)]] | None = None
    reset: bool = False  # start a fresh context instead of continuing this process's
    max_tokens: Annotated[int, Meta(ge=1, le=1 << 20)] = 256
    stop: list[Annotated[str, Meta(min_length=1, max_length=256)]] = []
    stop_token_ids: list[Annotated[int, Meta(ge=0)]] | None = None  # None = the model's EOS
    temperature: Annotated[float, Meta(ge=0.0, le=100.0)] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0, le=100.0)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    # context memory (syscalls/mem.py): the prompt becomes a page of the paged context,
    # the driver sequence is synced from the resident window, the reply becomes a page.
    page: bool = False
    role: Annotated[str, Meta(min_length=1, max_length=32)] = "user"
    pin: bool = False  # never evict this prompt's pages (a system prompt)
    # n > 1: the prompt is prefilled once and n choices continue from forks of that context
    # (sharing its KV copy-on-write); choice i samples with seed + i when a seed is given
    n: Annotated[int, Meta(ge=1, le=MAX_CHOICES)] = 1
    # JSON mode: the reply is one JSON object, enforced by constrained decoding (syscalls/jsonmode.py)
    json_object: bool = False


class GenerateChoice(Resp):
    text: str
    token_ids: list[int]
    finish_reason: str
    stop: str | None = None


class GenerateReply(Resp):
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos" | "stop" | "length" | "quota"
    stop: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_tokens: int = 0
    # with n > 1, every choice (the fields above describe choice 0; completion_tokens counts all)
    choices: list[GenerateChoice] = []


# -- ipc ---------------------------------------------------------------------
class ChanOpen(Req):
    name: Name
    capacity: Annotated[int, Meta(ge=1, le=1 << 20)] = 64
    private: bool = False  # a new channel named name.<random> that only the caller's tree may open


class ChanReply(Resp):
    chan: int
    name: str = ""  # the channel's name (kernel-assigned for a private one: pass it to children)


class Send(Req):
    chan: Annotated[int, Meta(ge=0)]
    data: Any = None
    timeout: Seconds | None = None


class Recv(Req):
    chan: Annotated[int, Meta(ge=0)]
    timeout: Seconds | None = None


class RecvReply(Resp):
    data: Any = None


class ChanClose(Req):
    chan: Annotated[int, Meta(ge=0)]


# -- results -----------------------------------------------------------------
class Ok(msgspec.Struct, tag="ok"):
    value: Any


class Err(msgspec.Struct, tag="err"):
    errno: int
    name: str
    message: str


Result = Ok | Err
