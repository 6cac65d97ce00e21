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
window, so an acknowledged page-out is never lost; only then are its tokens
and text dropped from RAM.  RAM keeps the resident pages and, for each run of
swapped pages, one :class:`SwapRun` (what its stub says): runs are separated
by resident pages, so what a process holds is bounded by its window, however
long its history.  A page-in reads the page back from the store, in a worker
thread.  Automatic recall ranks the swapped pages (BM25, on the store's index)
on the words of the new prompt that the resident window lacks, and takes a
page only if it clearly beats the rest (``recall_margin``): a turn about what
is already in view recalls nothing.
"""

from __future__ import annotations

import anyio

from lmos.drivers.base import Tokenizer, encode_segments
from lmos.errors import Errno, SyscallError
from lmos.kernel.memconfig import Geometry, MemSettings, MemStats, deep_size
from lmos.kernel.pages import (
    Page,
    PageState,
    SwapRun,
    get_policy,
    merge_runs,
    run_ends,
    split_tokens,
    stub_text,
)
from lmos.kernel.pagestore import PageStore
from lmos.kernel.recall import missing_terms, words

CORE_MAX_FIELDS = 64
Entry = Page | SwapRun  # a resident page, or a run of swapped ones
_Snapshot = tuple[list[Entry], list[tuple[Page, PageState, int, int]], int, int, dict[int, Page], int, int]
PageRow = tuple[int, str, str, int, str, bool, int]  # id, role, title, tokens, state, pinned, last_use


def _out(x: Entry) -> bool:
    return isinstance(x, SwapRun) or not x.resident


class ContextMemory(Geometry):
    """One process's page table, core memory and window."""

    def __init__(self, pid: int, tokenizer: Tokenizer, model_len: int, store: PageStore,
                 uid: int | None = None) -> None:
        self.pid = pid
        self.uid = uid  # whose store quota the pages count against (kernel/quota.py)
        self.tok = tokenizer
        self.model_len = model_len
        self.store = store
        self.settings = MemSettings()
        self.pages: list[Entry] = []  # in pos order
        self.core: dict[str, str] = {}
        self.stats = MemStats()
        self.turn = 0
        self.lock = anyio.Lock()
        self._next_id = 1
        self._next_pos = 1
        self._dirty: dict[int, Page] = {}
        self._core_dirty = False
        self._core_tokens: list[int] | None = None
        self._stubs: dict[tuple[int, int, int], list[int]] = {}  # of the current runs only
        self.n_swapped = 0  # swapped pages (in the store only)
        self.swapped_tokens = 0

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

    def _stub(self, run: list[Entry]) -> list[int]:
        key = run_ends(run)
        ids = self._stubs.get(key)
        if ids is None:
            if len(self._stubs) > 4096:
                self._stubs.clear()
            ids = self._stubs[key] = self._plain(stub_text(run))
        return ids

    def segments(self) -> list[tuple[list[Entry], list[int]]]:
        """The window as (entries, tokens) pieces: one resident page, or one run of swapped ones."""
        out: list[tuple[list[Entry], list[int]]] = []
        run: list[Entry] = []
        for p in self.pages:
            if _out(p):
                run.append(p)
                continue
            if run:
                out.append((run, self._stub(run)))
                run = []
            assert isinstance(p, Page)
            out.append(([p], p.tokens))
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
    def resident(self) -> list[Page]:
        """The pages in RAM, in window order."""
        return [p for p in self.pages if isinstance(p, Page) and p.resident]

    def page(self, page_id: int) -> Page:
        """A resident page (a swapped one is only in the store: see :meth:`page_table`)."""
        for p in self.resident():
            if p.id == page_id:
                return p
        raise SyscallError(Errno.ENOENT, f"no resident page p{page_id} in pid {self.pid}")

    async def page_table(self) -> list[PageRow]:
        """Every page in window order: resident ones from RAM, swapped ones read from the store."""
        async with self.lock:
            rows = [(p.pos, (p.id, p.role, p.title, len(p.tokens), p.state.value, p.pinned, p.last_use))
                    for p in self.resident()]
            rows += [(pos, (i, role, title, n, PageState.SWAPPED.value, pinned, last_use))
                     for i, pos, role, title, n, pinned, last_use in await self.store.swapped(self.pid)]
        return [r for _, r in sorted(rows)]

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
        return split_tokens(self.tok, ids, self.page_tokens)

    def _move_to_end(self, p: Page) -> None:
        """A page read back from the store joins the window at its end; its run (and stub) stay."""
        p.pos = self._next_pos
        self._next_pos += 1
        p.state = PageState.RESIDENT
        p.last_use = self.turn
        self.pages.append(p)
        self._dirty[p.id] = p
        self.n_swapped -= 1
        self.swapped_tokens -= len(p.tokens)

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

    def _fit(self, protect: set[int]) -> None:
        """If the window passes the high watermark, mark pages to evict down to the low one.

        Victims are chosen by the policy among unpinned, unprotected resident
        pages; :meth:`_commit` writes them to the store as swapped and only then
        do they leave RAM (:meth:`_compact`).
        """
        if self.window_len() <= self.high:
            return
        policy = get_policy(self.settings.policy)
        candidates = policy([p for p in self.resident() if not p.pinned and p.id not in protect])
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

    def _compact(self) -> None:
        """Evicted pages are durable in the store: replace each run of them (and the runs around
        them) by one :class:`SwapRun`, dropping their tokens and text from RAM."""
        if all(not _out(x) or isinstance(x, SwapRun) for x in self.pages):
            return
        gone = [p for p in self.pages if isinstance(p, Page) and not p.resident]
        self.stats.evictions += 1  # counted once durable: a failed page-out evicted nothing
        self.stats.pages_evicted += len(gone)
        self.n_swapped += len(gone)
        self.swapped_tokens += sum(len(p.tokens) for p in gone)
        self.pages = merge_runs(self.pages)
        live = {run_ends([x]) for x in self.pages if isinstance(x, SwapRun)}
        self._stubs = {k: v for k, v in self._stubs.items() if k in live}

    def _unevictable(self) -> int:
        """Tokens no eviction can free: core memory, pinned pages, and a stub's worth of slack."""
        pinned = sum(len(p.tokens) for p in self.resident() if p.pinned)
        stub = 0
        if self.pages:  # the stub of one page, as if the first were swapped
            first = run_ends(self.pages[:1])[0]
            stub = len(self._plain(stub_text([SwapRun(first, self.pages[0].title, first, 1, 0, 0)])))
        return len(self.core_tokens()) + pinned + 2 * stub

    # -- operations (each under the lock, each ends durable) -------------------
    def _snapshot(self) -> _Snapshot:
        attrs = [(p, p.state, p.pos, p.last_use) for p in self.pages if isinstance(p, Page)]
        return (list(self.pages), attrs, self._next_id, self._next_pos, dict(self._dirty), self.n_swapped,
                self.swapped_tokens)

    def _restore(self, snap: _Snapshot) -> None:
        """Undo a refused operation: the window is exactly as before it."""
        pages, attrs, self._next_id, self._next_pos, self._dirty, self.n_swapped, self.swapped_tokens = snap
        for p, state, pos, last_use in attrs:
            p.state, p.pos, p.last_use = state, pos, last_use
        self.pages = pages

    async def _commit(self, snap: _Snapshot, protect: set[int]) -> None:
        """Fit the window and make it durable, then free what was evicted; a refusal (ENOSPC,
        EDQUOT, EIO) restores ``snap``."""
        try:
            self._fit(protect)
            await self._flush()
        except BaseException:
            self._restore(snap)
            raise
        self._compact()

    async def _recall(self, ids: list[int]) -> list[Page]:
        """Automatic recall for a user turn: the best swapped matches, read back from the store."""
        s = self.settings
        if not self.n_swapped:
            return []
        terms = words(missing_terms(self.tok.decode(ids), self.resident()))
        hits = await self.store.rank(self.pid, terms, s.recall_k, s.recall_min_score, s.recall_margin)
        return await self.store.fetch(self.pid, [i for i, _ in hits])

    async def begin_turn(self, ids: list[int], role: str, pinned: bool) -> list[int]:
        """Add a prompt as pages (recalling first, if on) and return the window to generate from."""
        if not ids:
            raise SyscallError(Errno.EINVAL, "empty prompt")
        self._check_fits(len(ids))
        async with self.lock:
            hits = await self._recall(ids) if self.settings.auto_recall and role == "user" else []
            snap = self._snapshot()
            self.turn += 1
            self.stats.turns += 1
            protect: set[int] = set()
            budget = self.high - len(ids) - self._unevictable()
            for p in hits:
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
        floor = len(self.core_tokens()) + sum(len(p.tokens) for p in self.resident() if p.pinned)
        if floor + n > self.high:
            raise SyscallError(Errno.ENOSPC, f"pinned and new pages need more than the {self.high}-token "
                               f"window of pid {self.pid}")

    async def append(self, ids: list[int], role: str, pinned: bool) -> list[Page]:
        """Add pages without generating (a system prompt, a tool result)."""
        if not ids:
            raise SyscallError(Errno.EINVAL, "empty page")
        self._check_fits(len(ids))
        async with self.lock:
            return await self.append_held(ids, role, pinned)

    async def append_held(self, ids: list[int], role: str, pinned: bool) -> list[Page]:
        """:meth:`append` for a caller that holds :attr:`lock` (spawn's pinned pages, added before
        the process runs: syscalls/proc.py)."""
        self._check_fits(len(ids))
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
        """Bring swapped pages back (read from the store), at the end of the window; returns the ids
        paged in.  ENOENT for an id that is neither resident nor swapped."""
        async with self.lock:
            have = {p.id for p in self.resident()}
            want = list(dict.fromkeys(page_ids))
            todo = await self.store.fetch(self.pid, [i for i in want if i not in have])
            snap = self._snapshot()
            for p in todo:
                self._move_to_end(p)
            await self._commit(snap, set(want))
            self.stats.page_ins += len(todo)
            return [p.id for p in todo]

    async def rank(self, query: str, k: int) -> list[tuple[Page, float]]:
        """The best ``k`` swapped pages for ``query``, read back from the store (not paged in)."""
        async with self.lock:
            self.stats.recalls += 1
            hits = await self.store.rank(self.pid, words(query), k)
            pages = await self.store.fetch(self.pid, [i for i, _ in hits])
        return [(p, score) for p, (_, score) in zip(pages, hits, strict=True)]

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
                await self._commit(self._snapshot(), set())
            except BaseException:
                self.core, self._core_tokens, self._core_dirty = saved, None, False
                raise

    def summary(self) -> dict[str, int]:
        res = self.resident()
        stub = sum(len(t) for ps, t in self.segments() if _out(ps[0]))
        return {"resident_pages": len(res), "resident_tokens": sum(len(p.tokens) for p in res),
                "swapped_pages": self.n_swapped, "swapped_tokens": self.swapped_tokens,
                "pinned_pages": sum(p.pinned for p in res), "stub_tokens": stub,
                "core_tokens": len(self.core_tokens()), "window_tokens": self.window_len()}

    def held(self) -> tuple[int, int]:
        """What this context memory holds in RAM: token ids (pages, stubs, core) and bytes, counted
        deeply (every object reachable from it, the tokenizer, store and lock aside)."""
        tokens = sum(len(p.tokens) for p in self.pages if isinstance(p, Page))
        tokens += sum(len(t) for t in self._stubs.values()) + len(self._core_tokens or ())
        return tokens, deep_size(self, skip=(self.tok, self.store, self.lock))
