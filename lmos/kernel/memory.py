"""Virtual context memory: a process's context as pages, paged like RAM.

The window the model sees is assembled from the page table: core memory (named
fields the app keeps, pinned), then every page in ``pos`` order, a resident one
as its tokens and each run of swapped ones as one short stub.  Three rules keep
the driver's KV prefix cache useful:

- an ordinary turn only *appends* pages (the prompt, then the reply);
- eviction happens only when the window passes the high watermark (window
  minus a generation reserve) and then frees down to the low watermark, so it
  is rare rather than once per turn;
- paged-in pages (explicit or recalled) go to the *end* of the window.

:func:`sync_sequence` then truncates the driver sequence at the first token
that differs and appends the rest, so only what changed is computed again.
A page-out is written to the swap store (durably) before the page leaves the
window, so an acknowledged page-out is never lost.  Automatic recall ranks the
swapped pages (BM25) on the words of the new prompt that the resident window
lacks, and takes a page only if it clearly beats the rest (``recall_margin``):
a turn about what is already in view recalls nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from lmos.drivers.base import Driver, Tokenizer, encode_segments
from lmos.errors import Errno, SyscallError
from lmos.kernel.kvsync import sync_sequence
from lmos.kernel.memconfig import MemSettings, MemStats
from lmos.kernel.pages import Page, PageState, get_policy, ghost_of, stub_text
from lmos.kernel.pagestore import PageStore
from lmos.kernel.recall import RecallIndex, missing_terms

CORE_MAX_FIELDS = 64
_Snapshot = tuple[list[Page], list[tuple[Page, PageState, int, int]], int, int, dict[int, Page]]


class ContextMemory:
    """One process's page table, core memory and window."""

    def __init__(self, pid: int, tokenizer: Tokenizer, model_len: int, store: PageStore,
                 uid: int | None = None) -> None:
        self.pid = pid
        self.uid = uid  # whose store quota the pages count against (kernel/quota.py)
        self.tok = tokenizer
        self.model_len = model_len
        self.store = store
        self.settings = MemSettings()
        self.pages: list[Page] = []  # in pos order
        self.core: dict[str, str] = {}
        self.stats = MemStats()
        self.turn = 0
        self.lock = anyio.Lock()
        self._next_id = 1
        self._next_pos = 1
        self._dirty: dict[int, Page] = {}
        self._core_dirty = False
        self._core_tokens: list[int] | None = None
        self._stubs: dict[tuple[int, int, int], list[int]] = {}
        self.index = RecallIndex()

    # -- geometry ------------------------------------------------------------
    @property
    def limit(self) -> int:
        w = self.settings.window
        return min(w, self.model_len) if w > 0 else self.model_len

    @property
    def reserve(self) -> int:
        return self.settings.reserve or max(1, self.limit // 8)

    @property
    def high(self) -> int:
        return self.limit - self.reserve

    @property
    def low(self) -> int:
        return min(self.high, int(self.limit * self.settings.low_watermark))

    @property
    def page_tokens(self) -> int:
        return self.settings.page_tokens or max(16, self.limit // 8)

    def configure(self, **changes: Any) -> None:
        s = self.settings
        new = MemSettings(**{**s.as_dict(), **{k: v for k, v in changes.items() if v is not None}})
        get_policy(new.policy)
        if new.window < 0 or new.reserve < 0 or new.page_tokens < 0 or new.recall_k < 1:
            raise SyscallError(Errno.EINVAL, "window, reserve and page_tokens must be >= 0, recall_k >= 1")
        if not 0.0 < new.low_watermark <= 1.0:
            raise SyscallError(Errno.EINVAL, "low_watermark must be in (0, 1]")
        self.settings = new
        if self.reserve >= self.limit:
            self.settings = s
            raise SyscallError(Errno.EINVAL,
                               f"reserve {self.reserve} leaves no room in a window of {self.limit}")

    # -- window assembly -----------------------------------------------------
    def core_tokens(self) -> list[int]:
        if self._core_tokens is None:
            if not self.core:
                self._core_tokens = []
            else:
                body = "".join(f"{k}: {v}\n" for k, v in sorted(self.core.items()))
                self._core_tokens = self._plain(f"[core memory]\n{body}[/core memory]\n")
        return self._core_tokens

    def _plain(self, text: str) -> list[int]:
        """Tokens of kernel-written text that quotes what the process read (core memory values,
        page titles in stubs): plain text, so a special-token string in them stays characters."""
        return encode_segments(self.tok, [(text, True)])

    def _stub(self, run: list[Page]) -> list[int]:
        key = (run[0].id, run[-1].id, len(run))
        ids = self._stubs.get(key)
        if ids is None:
            if len(self._stubs) > 4096:
                self._stubs.clear()
            ids = self._stubs[key] = self._plain(stub_text(run))
        return ids

    def segments(self) -> list[tuple[list[Page], list[int]]]:
        """The window as (pages, tokens) pieces: one resident page, or one run of swapped ones."""
        out: list[tuple[list[Page], list[int]]] = []
        run: list[Page] = []
        for p in self.pages:
            if p.resident:
                if run:
                    out.append((run, self._stub(run)))
                    run = []
                out.append(([p], p.tokens))
            else:
                run.append(p)
        if run:
            out.append((run, self._stub(run)))
        return out

    def window_len(self) -> int:
        return len(self.core_tokens()) + sum(len(t) for _, t in self.segments())

    def window_tokens(self) -> list[int]:
        ids = list(self.core_tokens())
        for _, t in self.segments():
            ids.extend(t)
        return ids

    def window_text(self) -> str:
        return self.tok.decode(self.window_tokens())

    # -- pages -----------------------------------------------------------------
    @property
    def table(self) -> list[Page]:
        """The page table: every page, in window order (without ghosts)."""
        return [p for p in self.pages if not p.ghost]

    def swapped(self) -> list[Page]:
        return [p for p in self.pages if not p.resident and not p.ghost]

    def page(self, page_id: int) -> Page:
        for p in self.pages:
            if p.id == page_id and not p.ghost:
                return p
        raise SyscallError(Errno.ENOENT, f"no page p{page_id} in pid {self.pid}")

    def _add(self, role: str, ids: list[int], pinned: bool) -> list[Page]:
        """Append ``ids`` as pages of at most ``page_tokens`` tokens each."""
        added = []
        for chunk in self._chunks(ids):
            p = Page(id=self._next_id, pos=self._next_pos, role=role, text=self.tok.decode(chunk),
                     tokens=chunk, pinned=pinned, last_use=self.turn)
            self._next_id += 1
            self._next_pos += 1
            self.pages.append(p)
            self._dirty[p.id] = p
            added.append(p)
        return added

    def _chunks(self, ids: list[int]) -> list[list[int]]:
        """Split a long message into pages of at most ``page_tokens``, at sentence or word ends.

        Why not at exact multiples: a fact cut in two pages is recalled by
        neither half.  The cut goes after the last sentence end in the second
        half of the chunk, else before the last word start, else at the size.
        """
        size = self.page_tokens
        out: list[list[int]] = []
        i = 0
        while len(ids) - i > size:
            cut = i + size
            texts = [self.tok.decode([t]) for t in ids[i + size // 2:i + size]]
            sentence = [j for j, t in enumerate(texts) if t.rstrip().endswith((".", "!", "?")) or "\n" in t]
            word = [j for j, t in enumerate(texts) if t[:1].isspace()]
            if sentence:
                cut = i + size // 2 + sentence[-1] + 1
            elif word and word[-1] > 0:
                cut = i + size // 2 + word[-1]
            cut = max(cut, i + 1)
            out.append(ids[i:cut])
            i = cut
        out.append(ids[i:])
        return out

    def _move_to_end(self, p: Page) -> None:
        at = next(i for i, q in enumerate(self.pages) if q is p)
        self.pages[at] = ghost_of(p)
        p.pos = self._next_pos
        self._next_pos += 1
        p.state = PageState.RESIDENT
        p.last_use = self.turn
        self.pages.append(p)
        self._dirty[p.id] = p

    async def _flush(self) -> None:
        dirty, self._dirty = list(self._dirty.values()), {}
        core = dict(self.core) if self._core_dirty else None
        self._core_dirty = False
        try:
            await self.store.save(self.pid, dirty, core, uid=self.uid)
        except BaseException:
            for p in dirty:
                self._dirty.setdefault(p.id, p)
            self._core_dirty = self._core_dirty or core is not None
            raise

    async def _fit(self, protect: set[int]) -> None:
        """If the window passes the high watermark, evict down to the low one.

        Victims are chosen by the policy among unpinned, unprotected resident
        pages, written to the store as swapped, and only then leave the window.
        """
        if self.window_len() <= self.high:
            return
        policy = get_policy(self.settings.policy)
        candidates = policy([p for p in self.pages if p.resident and not p.pinned and p.id not in protect])
        victims: list[Page] = []
        for p in candidates:
            if self.window_len() <= self.low:
                break
            p.state = PageState.SWAPPED
            victims.append(p)
        if self.window_len() > self.high:
            for p in victims:
                p.state = PageState.RESIDENT
            raise SyscallError(Errno.ENOSPC, f"pinned and new pages need more than the {self.high}-token "
                               f"window of pid {self.pid}")
        for p in victims:
            self._dirty[p.id] = p
        try:
            await self._flush()  # durable before the pages leave the driver's window
        except BaseException:
            for p in victims:
                p.state = PageState.RESIDENT
            raise
        if victims:
            self.stats.evictions += 1
            self.stats.pages_evicted += len(victims)

    def _unevictable(self) -> int:
        """Tokens no eviction can free: core memory, pinned pages, and a stub's worth of slack."""
        pinned = sum(len(p.tokens) for p in self.pages if p.resident and p.pinned)
        stub = len(self._plain(stub_text([self.pages[0]]))) if self.pages else 0
        return len(self.core_tokens()) + pinned + 2 * stub

    # -- operations (each under the lock, each ends durable) -------------------
    def _snapshot(self) -> _Snapshot:
        return (list(self.pages), [(p, p.state, p.pos, p.last_use) for p in self.pages], self._next_id,
                self._next_pos, dict(self._dirty))

    def _restore(self, snap: _Snapshot) -> None:
        """Undo a refused operation: the window is exactly as before it."""
        pages, attrs, self._next_id, self._next_pos, self._dirty = snap
        for p, state, pos, last_use in attrs:
            p.state, p.pos, p.last_use = state, pos, last_use
        self.pages = pages

    async def _commit(self, snap: _Snapshot, protect: set[int]) -> None:
        """Fit the window and make it durable; a refusal (ENOSPC, EIO) restores ``snap``."""
        try:
            await self._fit(protect)
            await self._flush()
        except SyscallError:
            self._restore(snap)
            raise

    async def begin_turn(self, ids: list[int], role: str, pinned: bool) -> list[int]:
        """Add a prompt as pages (recalling first, if on) and return the window to generate from."""
        if not ids:
            raise SyscallError(Errno.EINVAL, "empty prompt")
        self._check_fits(len(ids))
        async with self.lock:
            snap = self._snapshot()
            self.turn += 1
            self.stats.turns += 1
            protect: set[int] = set()
            s = self.settings
            if s.auto_recall and role == "user":
                swapped = self.swapped()
                query = missing_terms(self.tok.decode(ids), self.pages) if swapped else ""
                hits = self.index.rank(swapped, query, s.recall_k, s.recall_min_score, s.recall_margin)
                budget = self.high - len(ids) - self._unevictable()
                for p, _ in hits:
                    if len(p.tokens) <= budget:  # fits, evicting older pages if need be
                        budget -= len(p.tokens)
                        self._move_to_end(p)
                        protect.add(p.id)
                        self.stats.page_ins += 1
                        self.stats.recalls += 1
            protect |= {p.id for p in self._add(role, ids, pinned)}
            await self._commit(snap, protect)
            return self.window_tokens()

    def _check_fits(self, n: int) -> None:
        """ENOSPC at once if ``n`` new tokens cannot fit even with every evictable page out
        (cheaper than cutting them into pages first, which decodes every token)."""
        floor = len(self.core_tokens()) + sum(len(p.tokens) for p in self.pages if p.resident and p.pinned)
        if floor + n > self.high:
            raise SyscallError(Errno.ENOSPC, f"pinned and new pages need more than the {self.high}-token "
                               f"window of pid {self.pid}")

    async def append(self, ids: list[int], role: str, pinned: bool) -> list[Page]:
        """Add pages without generating (a system prompt, a tool result)."""
        if not ids:
            raise SyscallError(Errno.EINVAL, "empty page")
        self._check_fits(len(ids))
        async with self.lock:
            snap = self._snapshot()
            added = self._add(role, ids, pinned)
            await self._commit(snap, {p.id for p in added})
            return added

    async def end_turn(self, out: list[int]) -> None:
        """The reply becomes pages: exactly the generated ids, as the driver holds them."""
        if not out:
            return
        async with self.lock:
            self._add("assistant", out, False)
            await self._flush()

    async def page_in(self, page_ids: list[int]) -> list[int]:
        """Bring swapped pages back, at the end of the window; returns the ids paged in."""
        async with self.lock:
            pages = [self.page(i) for i in dict.fromkeys(page_ids)]
            snap = self._snapshot()
            todo = [p for p in pages if not p.resident]
            for p in todo:
                self._move_to_end(p)
            await self._commit(snap, {p.id for p in pages})
            self.stats.page_ins += len(todo)
            return [p.id for p in todo]

    def rank(self, query: str, k: int) -> list[tuple[Page, float]]:
        self.stats.recalls += 1
        return self.index.rank(self.swapped(), query, k)

    async def write_core(self, name: str, value: str | None) -> None:
        async with self.lock:
            saved = dict(self.core)
            if value is None:
                if name not in self.core:
                    raise SyscallError(Errno.ENOENT, f"no core memory field {name!r}")
                del self.core[name]
            else:
                if name not in self.core and len(self.core) >= CORE_MAX_FIELDS:
                    raise SyscallError(Errno.ENOSPC, f"core memory holds at most {CORE_MAX_FIELDS} fields")
                old = self.core.get(name)
                self.core[name] = value
                self._core_tokens = None
                if len(self.core_tokens()) > self.limit // 4:
                    if old is None:
                        del self.core[name]
                    else:
                        self.core[name] = old
                    self._core_tokens = None
                    raise SyscallError(Errno.ENOSPC, f"core memory may use at most {self.limit // 4} tokens")
            self._core_tokens = None
            self._core_dirty = True
            try:
                await self._fit(set())
            except SyscallError:
                self.core, self._core_tokens, self._core_dirty = saved, None, False
                raise
            await self._flush()

    def summary(self) -> dict[str, int]:
        res = [p for p in self.pages if p.resident]
        sw = self.swapped()
        stub = sum(len(t) for ps, t in self.segments() if not ps[0].resident)
        return {"resident_pages": len(res), "resident_tokens": sum(len(p.tokens) for p in res),
                "swapped_pages": len(sw), "swapped_tokens": sum(len(p.tokens) for p in sw),
                "pinned_pages": sum(p.pinned for p in res), "stub_tokens": stub,
                "core_tokens": len(self.core_tokens()), "window_tokens": self.window_len()}


@dataclass
class MemoryManager:
    """The kernel's context memories, one per process that uses paging (created on first use)."""

    store: PageStore
    mems: dict[int, ContextMemory] = field(default_factory=dict)

    def get(self, pid: int, drv: Driver, uid: int | None = None) -> ContextMemory:
        m = self.mems.get(pid)
        if m is None:
            if drv.tokenizer is None:
                raise SyscallError(Errno.EINVAL, "context memory needs a model with a tokenizer")
            m = self.mems[pid] = ContextMemory(pid, drv.tokenizer, drv.limits.max_model_len, self.store, uid)
        return m

    def peek(self, pid: int) -> ContextMemory | None:
        return self.mems.get(pid)

    def sync(self, pid: int, drv: Driver, window: list[int]) -> int:
        """Driver sequence := window (prefix kept); returns the tokens now pending."""
        m = self.mems.get(pid)
        reuse = m.settings.prefix_reuse if m is not None else True
        kept, re = sync_sequence(drv, pid, window, reuse)
        if m is not None:
            m.stats.prefill_tokens += len(window) - kept
            m.stats.reprefill_tokens += re
        return len(window) - kept

    def release(self, pid: int) -> None:
        """The process ended: drop the in-memory table (its rows stay in the store)."""
        self.mems.pop(pid, None)
