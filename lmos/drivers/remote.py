"""The remote driver: a model behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp,
Ollama, a hosted API, or another ``lmos serve``), under this kernel's processes and scheduler.

Selecting it: ``model="openai+http://host:port/v1#model-name"`` (or ``openai+https``), or
``model="NAME"`` for a ``[models.NAME]`` table of the config (:class:`lmos.config.RemoteModel`).
The API key comes from the environment variable the table names (``LMOS_REMOTE_API_KEY``
by default), never from a file or the URL.

It is a *request-level* driver (see :mod:`lmos.drivers.base`): the kernel keeps each
process's context here as token ids, as for a local model, and every ``llm_generate``
becomes one streamed request carrying the whole context (the server's prefix cache
makes resending it cheap).  Two ways to send it:

- **completions** (when a local copy of the server model's tokenizer is configured and
  the server accepts token-id prompts, which is probed at load): the context's token
  ids go to ``/v1/completions``; streamed text is tokenized back locally.  A request cut
  off by a lost connection continues from the tokens it had produced.
- **chat**: the context is read back as messages (:mod:`lmos.drivers.remote_chat`) and
  sent to ``/v1/chat/completions``; a tool call the server returns is written in lmos's
  call syntax, so lmos's agent loop runs the tool.

Stop strings are matched by the kernel, which closes the stream on a hit (the server
stops generating at once); the model's own end of turn (``finish_reason: stop``) is
the end-of-sequence token.  Context memory: the driver reports the server's context
window as ``max_model_len``, so paging keeps every request within it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

from lmos.config import Config, RemoteModel
from lmos.drivers.base import (
    DriverLimits,
    KVCost,
    KVLocation,
    RequestResult,
    RequestSpec,
    SamplingParams,
    StepPlan,
    Tokenizer,
)
from lmos.drivers.remote_chat import EOS_ID, MARKER_IDS, ChatTokenizer, call_text, messages_of
from lmos.drivers.remote_http import Remote, Transient, backoff, probe_models, probe_token_prompts
from lmos.errors import Errno, SyscallError

log = logging.getLogger("lmos.remote")
SCHEME = "openai+"
DEFAULT_WINDOW = 4096
PIECE_CACHE = 1 << 16  # streamed pieces whose token ids are kept
RATE_LIMIT_TRIES = 8  # 429s in a row one request waits out before it fails with EAGAIN


def parse_spec(spec: str) -> RemoteModel:
    """``openai+http(s)://host:port/v1#model`` -> its settings (defaults for the rest)."""
    url = spec[len(SCHEME):]
    base, _, name = url.partition("#")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or not name:
        raise SyscallError(Errno.EINVAL, f"bad remote model {spec!r}: openai+http(s)://HOST:PORT/v1#MODEL")
    return RemoteModel(url=base, model=name)


def server_key(url: str) -> str:
    """The server of a base URL: its scheme, host and port (the path names an API, not a server)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def is_remote(model: str, config: Config) -> bool:
    return model.startswith(SCHEME) or model in config.models


def load_remote(model: str, config: Config) -> RemoteDriver:
    """The driver for an ``openai+`` URL or a ``[models.NAME]`` table; checks the server first."""
    rm = parse_spec(model) if model.startswith(SCHEME) else config.models[model]
    return RemoteDriver.connect(rm, name=model if not model.startswith(SCHEME) else rm.model)


class _Seq:
    __slots__ = ("computed", "sampling", "tokens")

    def __init__(self, tokens: list[int], sampling: SamplingParams) -> None:
        self.tokens = tokens
        self.sampling = sampling
        self.computed = 0  # tokens the server has seen as context or produced (pending = the rest)


class RemoteDriver:
    """A request-level :class:`lmos.drivers.base.RequestDriver` for one server model."""

    request_level = True
    inline_step = False

    def __init__(self, remote: Remote, model: str, *, tokenizer: Tokenizer | None, eos: tuple[int, ...],
                 window: int, max_in_flight: int, retries: int, api: str,
                 defaults: SamplingParams | None = None) -> None:
        self.http = remote
        self.model = model
        # the server, whatever model a request names: the kernel keeps at most max_in_flight requests in
        # flight to it, counting every model this kernel has loaded from it (kernel/reqsched.py)
        self.server = server_key(remote.url)
        self.name = f"remote:{model}"
        self.api = api  # "completions" (token-id prompts) or "chat"
        self.chat_tok = tokenizer if isinstance(tokenizer, ChatTokenizer) else None
        self.tokenizer: Tokenizer | None = tokenizer
        self.eos_token_ids = eos
        self.max_in_flight = max_in_flight
        self.retries = retries
        # no KV lives in lmos: zero blocks (what ps, top and /metrics show), none ever needed
        self.limits = DriverLimits(max_seqs=max_in_flight, max_tokens=window, num_blocks=0,
                                   block_size=16, max_model_len=window)
        self._defaults = defaults or SamplingParams()
        self._seqs: dict[int, _Seq] = {}
        self._piece_ids: dict[str, tuple[int, ...]] = {}  # streamed text -> its token ids (completions)
        self.requests = 0  # requests sent, retries included (statistics)
        self.retried = 0

    # -- loading -----------------------------------------------------------
    @classmethod
    def connect(cls, rm: RemoteModel, *, name: str) -> RemoteDriver:
        key = os.environ.get(rm.api_key_env) or None
        entry = probe_models(rm.url, key, rm.model, rm.timeout)
        window = rm.context_window or int(entry.get("max_model_len") or entry.get("context_length")
                                          or DEFAULT_WINDOW)
        tokenizer: Tokenizer | None = None
        eos: tuple[int, ...] = (EOS_ID,)
        defaults: SamplingParams | None = None
        api = rm.api
        if rm.tokenizer and api != "chat":
            tokenizer, eos, defaults = _local_tokenizer(rm.tokenizer)
            if api == "auto":
                api = ("completions" if probe_token_prompts(rm.url, key, rm.model, tokenizer.encode("hi"),
                                                            rm.timeout) else "chat")
        elif api == "completions":
            raise SyscallError(Errno.EINVAL, f"remote model {name}: api = \"completions\" needs a local "
                               "tokenizer (tokenizer = a model directory or \"builtin\")")
        else:
            api = "chat"
        if api == "chat":
            tokenizer, eos = ChatTokenizer(), (EOS_ID,)
        remote = Remote(rm.url, key, timeout=rm.timeout, name=name)
        return cls(remote, rm.model, tokenizer=tokenizer, eos=eos, window=window,
                   max_in_flight=rm.max_in_flight, retries=rm.retries, api=api, defaults=defaults)

    # -- bookkeeping (the Driver contract; no KV lives here) ---------------
    def default_sampling(self) -> SamplingParams:
        return self._defaults

    def _seq(self, seq_id: int) -> _Seq:
        s = self._seqs.get(seq_id)
        if s is None:
            raise SyscallError(Errno.ENOENT, f"no sequence {seq_id}")
        return s

    def add(self, seq_id: int, token_ids: list[int], sampling: SamplingParams) -> None:
        if seq_id in self._seqs:
            raise SyscallError(Errno.EEXIST, f"sequence {seq_id} exists")
        if len(token_ids) > self.limits.max_model_len:
            raise SyscallError(Errno.E2BIG, f"{len(token_ids)} tokens exceed the server's context window of "
                               f"{self.limits.max_model_len}")
        self._seqs[seq_id] = _Seq(list(token_ids), sampling)

    def set_sampling(self, seq_id: int, sampling: SamplingParams) -> None:
        self._seq(seq_id).sampling = sampling

    def append(self, seq_id: int, token_ids: list[int]) -> None:
        s = self._seq(seq_id)
        if len(s.tokens) + len(token_ids) > self.limits.max_model_len:
            raise SyscallError(Errno.E2BIG, f"context would exceed the server's window of "
                               f"{self.limits.max_model_len} tokens")
        s.tokens += token_ids

    def truncate(self, seq_id: int, length: int) -> None:
        s = self._seq(seq_id)
        del s.tokens[length:]
        s.computed = min(s.computed, length)

    def fork(self, seq_id: int, child_id: int) -> None:
        s = self._seq(seq_id)
        child = self._seqs[child_id] = _Seq(list(s.tokens), s.sampling)
        child.computed = s.computed

    def tokens(self, seq_id: int) -> list[int]:
        return list(self._seq(seq_id).tokens)

    def length(self, seq_id: int) -> int:
        return len(self._seq(seq_id).tokens)

    def pending(self, seq_id: int) -> int:
        s = self._seq(seq_id)
        return len(s.tokens) - s.computed

    def kv_needed(self, seq_id: int, num_tokens: int) -> int:
        return 0

    def kv_free(self) -> int:
        return 0

    def step(self, plan: StepPlan) -> dict[int, int | None]:
        raise SyscallError(Errno.EINVAL, "a request-level driver has no steps")

    def free(self, seq_id: int) -> None:
        self._seqs.pop(seq_id, None)

    def swap_out(self, seq_id: int) -> None:
        return None

    def swap_in(self, seq_id: int) -> None:
        return None

    def drop(self, seq_id: int) -> None:
        return None

    def cost(self, seq_id: int) -> KVCost:
        n = len(self._seq(seq_id).tokens)
        return KVCost(location=KVLocation.NONE, blocks=0, exclusive_blocks=0, swap_bytes=0,
                      recompute_tokens=n, swap_seconds=0.0, recompute_seconds=0.0)

    def close(self) -> None:
        self._seqs.clear()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- generation --------------------------------------------------------
    async def generate(self, seq_id: int, spec: RequestSpec,
                       result: RequestResult) -> AsyncGenerator[int, None]:
        """Stream one request (see :class:`lmos.drivers.base.RequestDriver`)."""
        s = self._seq(seq_id)
        start = len(s.tokens)
        s.computed = start  # the server sees the whole context
        try:
            # closed explicitly (not left to the garbage collector), so that a consumer that stops
            # early closes the HTTP stream at once: that is how the server learns to stop
            async with aclosing(self._stream(seq_id, s, spec, result)) as stream:
                async for tok in stream:
                    yield tok
        finally:
            # as on a local model: the last token of a finished request is pending (a following
            # llm_generate with no new prompt continues from it)
            if len(s.tokens) > start:
                s.computed = len(s.tokens) - 1

    async def _stream(self, seq_id: int, s: _Seq, spec: RequestSpec,
                      result: RequestResult) -> AsyncGenerator[int, None]:
        produced, attempt, limited = 0, 0, 0
        calls: dict[int, list[str]] = {}  # chat tool calls: index -> [name, arguments]
        finish: str | None = None
        # The token that reaches max_tokens is held until the server has ended the stream (it ends
        # there too): the kernel would stop reading at that token, and a stream closed before its
        # end costs the connection, which the next request would have to open again.
        # With tools declared (chat mode) the whole reply is held: lmos's call syntax wants a turn
        # that is calls only, and a server may stream some text before its calls.
        last: list[int] = []
        while True:
            await self.http.gate()
            done_before = produced
            body = self._body(s, spec.max_tokens - produced)
            hold = "tools" in body
            path = "/completions" if self.api == "completions" else "/chat/completions"
            self.requests += 1
            try:
                async with aclosing(self.http.events(path, body)) as events:
                    async for ev in events:
                        _usage(ev, result, done_before)
                        for choice in ev.get("choices") or ():
                            text, fin = self._choice(choice, calls)
                            finish = fin or finish
                            for tok in self._tokens_of(text) if text else ():
                                if seq_id not in self._seqs:
                                    return  # freed meanwhile (the process ended)
                                if hold or produced + len(last) + 1 >= spec.max_tokens:
                                    last.append(tok)
                                    continue
                                s.tokens.append(tok)
                                produced += 1
                                yield tok
                break
            except Transient as exc:
                last.clear()  # held back, never sent: a retry produces them again
                if exc.rate_limited:
                    limited += 1
                    self.http.back_off(exc.retry_after if exc.retry_after is not None else backoff(limited))
                    if limited >= RATE_LIMIT_TRIES:
                        raise SyscallError(Errno.EAGAIN, f"remote model {self.model}: the server keeps "
                                           f"rate limiting ({exc.message})") from None
                    continue
                if attempt >= self.retries or (produced > done_before and self.api == "chat"):
                    again = f" after {attempt} retries" if attempt else ""
                    raise SyscallError(Errno.EIO,
                                       f"remote model {self.model}: {exc.message}{again}") from None
                attempt += 1
                self.retried += 1
                log.info("remote model %s: %s; retry %d of %d", self.model, exc.message, attempt,
                         self.retries)
                await anyio.sleep(backoff(attempt))
        for tok in [] if calls else last:  # (text before tool calls is left out: see above)
            s.tokens.append(tok)
            yield tok
        if finish == "length":
            result.finish_reason = "length"
            return
        for idx in sorted(calls):  # the server's tool calls, in lmos's call syntax
            name, args = calls[idx]
            for tok in [MARKER_IDS["<|call|>"], *self._tokens_of(call_text(name, args))]:
                s.tokens.append(tok)
                yield tok
        result.finish_reason = "eos"
        if self.eos_token_ids:
            s.tokens.append(self.eos_token_ids[0])
            yield self.eos_token_ids[0]

    def _body(self, s: _Seq, max_tokens: int) -> dict[str, Any]:
        sp = s.sampling
        body: dict[str, Any] = {"model": self.model, "max_tokens": max(1, max_tokens), "stream": True,
                                "stream_options": {"include_usage": True},
                                "temperature": sp.temperature, "top_p": sp.top_p}
        if sp.seed is not None:
            body["seed"] = sp.seed
        if sp.top_k:  # extensions vLLM, SGLang and llama.cpp accept; sent only when asked for
            body["top_k"] = sp.top_k
        if sp.repetition_penalty != 1.0:
            body["repetition_penalty"] = sp.repetition_penalty
        if self.api == "completions":
            body["prompt"] = list(s.tokens)
        else:
            assert self.chat_tok is not None
            messages, tools = messages_of(s.tokens, self.chat_tok)
            body["messages"] = messages or [{"role": "user", "content": ""}]
            if tools:
                body["tools"] = tools
        return body

    def _choice(self, choice: dict[str, Any], calls: dict[int, list[str]]) -> tuple[str, str | None]:
        """The text a streamed choice adds, and its finish reason (tool calls gathered in ``calls``)."""
        if self.api == "completions":
            return str(choice.get("text") or ""), choice.get("finish_reason")
        delta = choice.get("delta") or {}
        for tc in delta.get("tool_calls") or ():
            slot = calls.setdefault(int(tc.get("index", len(calls))), ["", ""])
            fn = tc.get("function") or {}
            slot[0] += str(fn.get("name") or "")
            slot[1] += str(fn.get("arguments") or "")
        return str(delta.get("content") or ""), choice.get("finish_reason")

    def _tokens_of(self, text: str) -> list[int]:
        if self.chat_tok is not None:
            return self.chat_tok.intern(text)
        # Streamed pieces are mostly single tokens, the same few thousand again and again: a
        # cache saves the tokenizer call (tens of microseconds) on nearly every token.
        ids = self._piece_ids.get(text)
        if ids is None:
            assert self.tokenizer is not None
            if len(self._piece_ids) >= PIECE_CACHE:
                self._piece_ids.clear()
            ids = self._piece_ids[text] = tuple(self.tokenizer.encode(text))
        return list(ids)


def _usage(ev: dict[str, Any], result: RequestResult, before: int) -> None:
    """The server's token counts, when an event carries them (``before``: tokens of earlier tries)."""
    usage = ev.get("usage")
    if isinstance(usage, dict):
        result.prompt_tokens = _int(usage.get("prompt_tokens"))
        got = _int(usage.get("completion_tokens"))
        result.completion_tokens = None if got is None else before + got


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) else None


def _local_tokenizer(where: str) -> tuple[Tokenizer, tuple[int, ...], SamplingParams]:
    """The server model's tokenizer from a local directory (or "builtin"), its EOS ids and sampling
    defaults, read from its files without loading any weights."""
    from lmos.drivers.hf_load import HFTokenizer
    from lmos.models import builtin_model_path

    root = Path(builtin_model_path() if where == "builtin" else os.path.expanduser(where))
    try:
        from transformers import AutoTokenizer

        tok = HFTokenizer(AutoTokenizer.from_pretrained(str(root), local_files_only=True))
    except (OSError, ValueError) as exc:
        raise SyscallError(Errno.ENOENT, f"no tokenizer at {where!r}: {str(exc).splitlines()[0]}") from None
    eos: tuple[int, ...] = ()
    defaults = SamplingParams()
    for name in ("generation_config.json", "config.json"):
        try:
            doc = json.loads((root / name).read_text())
        except (OSError, ValueError):
            continue
        if not eos and doc.get("eos_token_id") is not None:
            e = doc["eos_token_id"]
            eos = tuple(int(x) for x in e) if isinstance(e, list) else (int(e),)
        if name == "generation_config.json" and not doc.get("do_sample", False):
            defaults = SamplingParams(temperature=0.0)
    if not eos and getattr(tok.hf, "eos_token_id", None) is not None:
        eos = (int(tok.hf.eos_token_id),)
    return tok, eos, defaults
