"""Context pages, their states, eviction policies and the stubs that replace them.

A page is one message of a process's context (or a chunk of a long one) as the
exact token ids it occupies in the model window.  Keeping token ids, not just
text, matters: a generated reply re-tokenized from its text may differ from the
ids the model produced, and any difference would invalidate the KV cache from
that point on.  ``pos`` orders pages in the window; a page brought back by
recall gets a new, larger ``pos`` so it lands at the end and the cached prefix
before it stays valid.

Only resident pages live in RAM as :class:`Page` objects.  A run of
consecutive swapped pages is one :class:`SwapRun`: the few fields its stub
names, whatever the run holds.  Runs are separated by resident pages (two
adjacent runs merge), so RAM is bounded by the window, not by the history.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lmos.drivers.base import Tokenizer
from lmos.errors import Errno, SyscallError

TITLE_CHARS = 40


class PageState(enum.Enum):
    RESIDENT = "resident"  # its tokens are in the window
    SWAPPED = "swapped"  # in the swap store only; a stub in the window names it


@dataclass(slots=True)
class Page:
    id: int  # per-process, increasing, never reused
    pos: int  # window order
    role: str
    text: str
    tokens: list[int]
    state: PageState = PageState.RESIDENT
    pinned: bool = False  # never evicted (system prompt, core memory)
    last_use: int = 0  # the turn it was created or last paged in
    title: str = field(default="")
    stored: bool = False  # its row (tokens and text) is in the swap store: later writes are metadata only

    def __post_init__(self) -> None:
        if not self.title:
            self.title = make_title(self.text)

    @property
    def resident(self) -> bool:
        return self.state is PageState.RESIDENT


@dataclass(frozen=True, slots=True)
class SwapRun:
    """A run of consecutive swapped pages, as RAM keeps it: what its stub names.

    ``count`` includes the places of pages paged in since the run formed: a
    page-in moves the page to the end of the window and leaves the run (and so
    its stub, and every token after it) exactly as it was.  ``lo``..``hi`` is
    the ``pos`` range the run covers.  Immutable: eviction builds merged runs,
    so a snapshot of the page list can restore the window exactly.
    """

    first_id: int
    title: str  # of the first page
    last_id: int
    count: int
    lo: int
    hi: int


def make_title(text: str) -> str:
    """A short one-line title: the first words of the page."""
    flat = " ".join(text.split())
    return flat if len(flat) <= TITLE_CHARS else flat[:TITLE_CHARS - 1].rstrip() + "…"


def stub_text(run: Sequence[Page | SwapRun]) -> str:
    """The line that stands in the window for a run of consecutive swapped pages.

    One stub per run (not per page) keeps the cost of a long paged-out history
    bounded: the stub names the ids and the first page's title, and says how to
    get the pages back.
    """
    first, last, count = run_ends(run)
    if count == 1:
        what = f"p{first} \"{run[0].title}\""
    else:
        what = f"{count} pages p{first}..p{last}, first \"{run[0].title}\""
    return f"\n[paged out: {what} - mem_recall(query) or mem_page_in(ids)]\n"


def run_ends(run: Sequence[Page | SwapRun]) -> tuple[int, int, int]:
    """First page id, last page id and page count of a run of pages and runs."""
    a, z = run[0], run[-1]
    first = a.first_id if isinstance(a, SwapRun) else a.id
    last = z.last_id if isinstance(z, SwapRun) else z.id
    return first, last, sum(x.count if isinstance(x, SwapRun) else 1 for x in run)


def split_tokens(tok: Tokenizer, ids: list[int], size: int) -> list[list[int]]:
    """Split a long message into pages of at most ``page_tokens``, at sentence or word ends.

    Why not at exact multiples: a fact cut in two pages is recalled by
    neither half.  The cut goes after the last sentence end in the second
    half of the chunk, else before the last word start, else at the size.
    """
    out: list[list[int]] = []
    i = 0
    while len(ids) - i > size:
        cut = i + size
        texts = [tok.decode([t]) for t in ids[i + size // 2:i + size]]
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


def merge_runs(entries: list[Page | SwapRun]) -> list[Page | SwapRun]:
    """``entries`` with each run of consecutive swapped pages and runs made one :class:`SwapRun`."""
    out: list[Page | SwapRun] = []
    run: list[Page | SwapRun] = []
    for x in [*entries, None]:
        if x is not None and (isinstance(x, SwapRun) or not x.resident):
            run.append(x)
            continue
        if len(run) == 1 and isinstance(run[0], SwapRun):
            out.append(run[0])
        elif run:
            first, last, count = run_ends(run)
            a, z = run[0], run[-1]
            out.append(SwapRun(first, a.title, last, count, a.lo if isinstance(a, SwapRun) else a.pos,
                               z.hi if isinstance(z, SwapRun) else z.pos))
        run = []
        if x is not None:
            out.append(x)
    return out


# An eviction policy orders the evictable pages, first victim first.
Policy = Callable[[list[Page]], list[Page]]


def lru(pages: list[Page]) -> list[Page]:
    """Least recently used first; ties broken by window order (oldest first)."""
    return sorted(pages, key=lambda p: (p.last_use, p.pos))


def fifo(pages: list[Page]) -> list[Page]:
    """Earliest in the window first, regardless of use."""
    return sorted(pages, key=lambda p: p.pos)


def largest(pages: list[Page]) -> list[Page]:
    """Biggest pages first: frees the window with the fewest stubs."""
    return sorted(pages, key=lambda p: (-len(p.tokens), p.last_use, p.pos))


POLICIES: dict[str, Policy] = {"lru": lru, "fifo": fifo, "largest": largest}


def get_policy(name: str) -> Policy:
    pol = POLICIES.get(name)
    if pol is None:
        raise SyscallError(Errno.EINVAL, f"unknown eviction policy {name!r} (have: {', '.join(POLICIES)})")
    return pol
