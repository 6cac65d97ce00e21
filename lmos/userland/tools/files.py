"""File tools: ``fs_read``, ``fs_write``, ``fs_list`` and ranked ``search`` over the user's files.

The fs tools are thin: each makes the matching fs syscall *as the calling
process*, so path-scoped capabilities, confirmation of overwrites and taint
tracking apply exactly as if the program had made the call itself.  ``search``
ranks the files the caller may read with BM25+ (``rank_bm25``;
plain BM25 gives words common to half the files zero weight in small collections), which needs no
model and is good enough for FAQ- and notes-sized collections.
"""

from __future__ import annotations

import re
from typing import Any

from lmos.kernel.files import store
from lmos.syscalls.caps import grants
from lmos.syscalls.tool import Tool, ToolCtx

PATH = {"type": "string", "minLength": 1, "maxLength": 1024}
MAX_SEARCH_FILES = 2000
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


async def fs_read(ctx: ToolCtx, args: dict[str, Any]) -> str:
    r = await ctx.call("fs_read", path=args["path"])
    return str(r.data)


async def fs_write(ctx: ToolCtx, args: dict[str, Any]) -> str:
    r = await ctx.call("fs_write", path=args["path"], data=args["data"], mode=args.get("mode") or "overwrite")
    return f"wrote {r.size} bytes to {r.path}"


async def fs_list(ctx: ToolCtx, args: dict[str, Any]) -> str:
    r = await ctx.call("fs_list", path=args.get("path") or "/")
    return "\n".join(e.path + ("/" if e.kind == "dir" else "") for e in r.entries) or "(empty)"


async def search(ctx: ToolCtx, args: dict[str, Any]) -> str:
    """The best-matching passages (paragraphs) of the caller's readable files."""
    from rank_bm25 import BM25Plus

    fs = store(ctx.kernel)
    files = [
        f
        for f in await fs.walk(ctx.uid, args.get("path") or "/")
        if grants(ctx.proc.caps, f"fs.read:{f.path}")
    ][:MAX_SEARCH_FILES]
    passages: list[tuple[str, str]] = []
    for f in files:
        data, st = await fs.read(ctx.uid, f.path)
        if st.tainted or st.owner != ctx.uid:
            ctx.taint()
        for para in re.split(r"\n\s*\n", data.decode("utf-8", errors="replace")):
            if para.strip():
                passages.append((f.path, para.strip()))
    query = words(args["query"])
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
        "Write a text file (mode: create, overwrite or append).",
        {
            "type": "object",
            "properties": {
                "path": PATH,
                "data": {"type": "string", "maxLength": 1 << 20},
                "mode": {"enum": ["create", "overwrite", "append"]},
            },
            "required": ["path", "data"],
        },
        fs_write,
    ),
    Tool("fs_list", "List a directory.", {"type": "object", "properties": {"path": PATH}}, fs_list),
    Tool(
        "search",
        "Search the user's files; returns the best-matching passages.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 1000},
                "path": PATH,
                "k": {"type": "integer", "minimum": 1, "maximum": 20},
            },
            "required": ["query"],
        },
        search,
    ),
]
