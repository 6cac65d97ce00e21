"""File tools: ``fs_read``, ``fs_write``, ``fs_list`` and ranked ``search`` over the user's files.

The fs tools are thin: each makes the matching fs syscall *as the calling
process*, so path-scoped capabilities, confirmation of overwrites and taint
tracking apply exactly as if the program had made the call itself.  ``search``
does the same: it lists and reads through ``fs_list``/``fs_read``, so what it
may see and whether reading taints the caller are the syscalls' decisions, not
a second copy of their rules; a file it may not read is skipped.  It ranks
passages with BM25+ (``rank_bm25``; plain BM25 gives words common to half the
files zero weight in small collections), which needs no model and is good
enough for FAQ- and notes-sized collections.  Words are compared without a
plural or verb ``-s`` ("refund" finds "refunds"), and the query's function
words ("how", "do", "my" ...) are dropped: in a question they match every
passage, so a question about something no file mentions would otherwise still
"find" passages, and the support app could not tell it should hand off.
"""

from __future__ import annotations

import re
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.syscalls.tool import Tool, ToolCtx

PATH = {"type": "string", "minLength": 1, "maxLength": 1024,
        "description": "an absolute path, e.g. /notes/todo.md"}
MAX_SEARCH_FILES = 2000
_WORD = re.compile(r"[a-z0-9]+")


_STOPWORDS = """a about an and are as at be but by can could do does did for from get got had has
have how i if in is it its me my no not of on or our please so than that the their them then there these
they this to us was we what when where which who why will with would you your"""
STOPWORDS = frozenset(_STOPWORDS.split())


def _stem(word: str) -> str:
    """``word`` without a plural/verb ``-s`` (``-ies`` -> ``-y``): enough for matching FAQ wording."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The words of ``text`` as search compares them (lower case, stemmed)."""
    return [_stem(w) for w in _WORD.findall(text.lower())]


def query_words(text: str) -> list[str]:
    """The words of a query that carry its meaning (:func:`words` less :data:`STOPWORDS`); all of
    them when the query is only function words."""
    found = words(text)
    return [w for w in found if w not in STOPWORDS] or found


async def fs_read(ctx: ToolCtx, args: dict[str, Any]) -> str:
    r = await ctx.call("fs_read", path=args["path"])
    return str(r.data)


async def fs_write(ctx: ToolCtx, args: dict[str, Any]) -> str:
    r = await ctx.call("fs_write", path=args["path"], data=args["data"], mode=args.get("mode") or "overwrite")
    return f"wrote {r.size} bytes to {r.path}"


async def fs_list(ctx: ToolCtx, args: dict[str, Any]) -> str:
    r = await ctx.call("fs_list", path=args.get("path") or "/")
    return "\n".join(e.path + ("/" if e.kind == "dir" else "") for e in r.entries) or "(empty)"


def _within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _roots(ctx: ToolCtx, path: str) -> list[str]:
    """Where to look under ``path``: ``path`` itself, or the narrower ``fs.read:`` scopes the caller holds.

    This only chooses what to ask for; every listing and read is still the
    syscall's decision (a root the caller may not read fails with EPERM there).
    """
    path = "/" + path.strip("/")  # the syscalls still normalize (and refuse `..`) themselves
    if ctx.has(f"fs.read:{path}"):
        return [path]
    scopes = sorted({c.partition(":")[2] for c in ctx.caps if c.startswith("fs.read:")})
    inside = [s for s in scopes if s and _within(s, path)]
    return [s for s in inside if not any(o != s and _within(s, o) for o in inside)]


async def _files_under(ctx: ToolCtx, root: str) -> list[str]:
    try:
        r = await ctx.call("fs_list", path=root, recursive=True)
    except SyscallError as exc:
        if exc.errno == Errno.ENOTDIR:
            return [root]  # a capability scoped to one file
        if exc.errno in (Errno.ENOENT, Errno.EPERM):
            return []
        raise
    return [e.path for e in r.entries if e.kind == "file"]


async def search(ctx: ToolCtx, args: dict[str, Any]) -> str:
    """The best-matching passages (paragraphs) of the caller's readable files."""
    from rank_bm25 import BM25Plus

    files: dict[str, None] = {}  # ordered, without duplicates
    for root in _roots(ctx, args.get("path") or "/"):
        files.update(dict.fromkeys(await _files_under(ctx, root)))
    passages: list[tuple[str, str]] = []
    for path in list(files)[:MAX_SEARCH_FILES]:
        try:  # fs_read taints the caller for files others (or tainted processes) wrote
            data = str((await ctx.call("fs_read", path=path)).data)
        except SyscallError:
            continue  # unreadable (denied, gone meanwhile, too big, a host file that fails): skipped
        for para in re.split(r"\n\s*\n", data):
            if para.strip():
                passages.append((path, para.strip()))
    query = query_words(args["query"])
    if not passages or not query:
        return "no results"
    bm25 = BM25Plus([words(text) or [""] for _, text in passages])
    scores = bm25.get_scores(query)
    ranked = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
    k = int(args.get("k") or 3)
    hits = [i for i in ranked if set(query) & set(words(passages[i][1]))][:k]
    if not hits:
        return "no results"
    return "\n".join(f"{passages[i][0]}: {passages[i][1]}" for i in hits)


TOOLS = [
    Tool(
        "fs_read",
        "Read a text file.",
        {"type": "object", "properties": {"path": PATH}, "required": ["path"]},
        fs_read,
    ),
    Tool(
        "fs_write",
        "Write a text file.",
        {
            "type": "object",
            "properties": {
                "path": PATH,
                "data": {"type": "string", "maxLength": 1 << 20, "description": "the text to write"},
                "mode": {"enum": ["create", "overwrite", "append"], "description": "overwrite if not given"},
            },
            "required": ["path", "data"],
        },
        fs_write,
    ),
    Tool("fs_list", "List a directory.",
         {"type": "object", "properties": {"path": PATH}}, fs_list),
    Tool(
        "search",
        "Search the user's files for the best-matching passages.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 1000,
                          "description": "what to look for"},
                "path": {**PATH, "description": "search only under this folder"},
                "k": {"type": "integer", "minimum": 1, "maximum": 20,
                      "description": "passages to return (3)"},
            },
            "required": ["query"],
        },
        search,
    ),
]
