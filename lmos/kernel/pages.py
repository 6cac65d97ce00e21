"""Context pages, their states, eviction policies and the stubs that replace them.

A page is one message of a process's context (or a chunk of a long one) as the
exact token ids it occupies in the model window.  Keeping token ids, not just
text, matters: a generated reply re-tokenized from its text may differ from the
ids the model produced, and any difference would invalidate the KV cache from
that point on.  ``pos`` orders pages in the window; a page brought back by
recall gets a new, larger ``pos`` so it lands at the end and the cached prefix
before it stays valid.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    ghost: bool = False  # where a paged-in page used to be: keeps its old stub unchanged

    def __post_init__(self) -> None:
        if not self.title:
            self.title = make_title(self.text)

    @property
    def resident(self) -> bool:
        return self.state is PageState.RESIDENT


def ghost_of(p: Page) -> Page:
    """The placeholder left at a page's old position when it moves to the end of the window.

    Why: the stub of a run of swapped pages names its pages; if paging one in
    changed that stub, every token after it would lose its KV.  The ghost keeps
    the run, and so the stub, exactly as it was.
    """
    return Page(id=p.id, pos=p.pos, role=p.role, text="", tokens=[], state=PageState.SWAPPED,
                pinned=False, last_use=p.last_use, title=p.title, ghost=True)


def make_title(text: str) -> str:
    """A short one-line title: the first words of the page."""
    flat = " ".join(text.split())
    return flat if len(flat) <= TITLE_CHARS else flat[:TITLE_CHARS - 1].rstrip() + "…"


def stub_text(run: Sequence[Page]) -> str:
    """The line that stands in the window for a run of consecutive swapped pages.

    One stub per run (not per page) keeps the cost of a long paged-out history
    bounded: the stub names the ids and the first page's title, and says how to
    get the pages back.
    """
    first, last = run[0], run[-1]
    if len(run) == 1:
        what = f"p{first.id} \"{first.title}\""
    else:
        what = f"{len(run)} pages p{first.id}..p{last.id}, first \"{first.title}\""
    return f"\n[paged out: {what} - mem_recall(query) or mem_page_in(ids)]\n"


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
