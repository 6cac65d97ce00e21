"""Tokenizing large inputs without stalling the event loop.

Tokenizing is CPU work proportional to the text: a 16 MB prompt takes the
built-in model's tokenizer about 20 seconds.  Done on the event loop, every
other process, stream and HTTP client would wait that long.  Two rules keep a
prompt from degrading the kernel:

* **A cheap length check first.**  A token never covers more characters than
  the longest entry of the tokenizer's vocabulary, so text longer than
  ``window * max_token_chars`` characters cannot fit a window of ``window``
  tokens: it is refused with E2BIG before any tokenizing.
* **Off the loop.**  What passes the check and is longer than
  ``INLINE_CHARS`` is tokenized in a thread of a small pool of its own (not
  anyio's default pool, which file syscalls, the journal and model steps
  need).  The transformers tokenizers release the GIL while they work, so the
  loop keeps running; a cancelled call (a killed process) is abandoned at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from lmos.errors import Errno, SyscallError

INLINE_CHARS = 4096  # below this, a thread hop costs more than the tokenizing
TOKENIZER_THREADS = 2  # large tokenizations in flight at once, all processes together

_limiters: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
_max_chars: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()


def _limiter() -> anyio.CapacityLimiter:
    key = anyio.lowlevel.current_token().native_token
    lim = _limiters.get(key)
    if lim is None:
        lim = _limiters[key] = anyio.CapacityLimiter(TOKENIZER_THREADS)
    return lim


def max_token_chars(tok: Any) -> int | None:
    """The most characters one token of ``tok`` can stand for, or None if unknown.

    A tokenizer may say so itself (``max_token_chars``); for a transformers
    tokenizer it is the longest vocabulary entry (byte-level entries spell one
    character per byte, so this bounds characters too).  Computed once per tokenizer.
    """
    if tok is None:
        return None
    own = getattr(tok, "max_token_chars", None)
    if isinstance(own, int) and own > 0:
        return own
    try:
        if tok in _max_chars:
            return _max_chars[tok]
    except TypeError:  # not weakly referenceable: computed each time
        pass
    value: int | None = None
    hf = getattr(tok, "hf", None)
    get_vocab = getattr(hf, "get_vocab", None)
    if callable(get_vocab):
        try:
            vocab = get_vocab()
            value = max((len(k) for k in vocab), default=0) or None
        except Exception:  # an odd tokenizer: no cheap bound, only the off-loop rule applies
            value = None
    try:
        _max_chars[tok] = value
    except TypeError:
        pass
    return value


def check_length(tok: Any, chars: int, window: int, what: str = "prompt") -> None:
    """E2BIG if ``chars`` characters cannot fit ``window`` tokens, decided without tokenizing."""
    per = max_token_chars(tok)
    if per is not None and chars > window * per:
        raise SyscallError(Errno.E2BIG, f"{what} of {chars} characters cannot fit the {window}-token "
                           f"window (at most {per} characters per token)")


async def off_loop(chars: int, encode: Callable[[], list[int]]) -> list[int]:
    """``encode()``: inline when ``chars`` is small, else in a tokenizer thread."""
    if chars <= INLINE_CHARS:
        return encode()
    return await anyio.to_thread.run_sync(encode, limiter=_limiter(), abandon_on_cancel=True)
