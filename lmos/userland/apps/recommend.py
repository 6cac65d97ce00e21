"""``recommend``: rank catalogue items for a user profile, then let the model pitch the top ones.

Ranking is BM25+ of the profile against each item's title, tags and
description: deterministic, explainable, and cheap for thousands of items.
The model only writes the explanation, so a small model cannot reorder or
invent items.  The catalogue is a file in the user's tree, one JSON object per
line (``{"id", "title", "description", "tags"}``) or plain ``title: text`` lines.

Usage: ``recommend [--catalogue PATH] [--top N] PROFILE...``
"""

from __future__ import annotations

import json
import re
from typing import Any

from lmos.errors import Errno, SyscallError
from lmos.userland.agent import ask

CATALOGUE = "/recommend/catalogue.jsonl"
_WORD = re.compile(r"[a-z0-9]+")


def parse_catalogue(text: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SyscallError(Errno.EINVAL, f"catalogue line {n}: {exc.msg}") from None
            if not isinstance(item, dict) or "title" not in item:
                raise SyscallError(Errno.EINVAL, f"catalogue line {n}: an item needs a title")
        else:
            title, _, desc = line.partition(":")
            item = {"title": title.strip(), "description": desc.strip()}
        item.setdefault("id", str(len(items) + 1))
        items.append(item)
    return items


def rank(items: list[dict[str, Any]], profile: str) -> list[tuple[float, dict[str, Any]]]:
    from rank_bm25 import BM25Plus

    def words(item: dict[str, Any]) -> list[str]:
        tags = " ".join(item.get("tags") or [])
        return _WORD.findall(f"{item['title']} {tags} {item.get('description', '')}".lower()) or [""]

    query = _WORD.findall(profile.lower())
    scores = BM25Plus([words(i) for i in items]).get_scores(query)
    order = sorted(range(len(items)), key=lambda i: (-scores[i], i))
    return [(float(scores[i]), items[i]) for i in order]


async def main(sys: Any, argv: list[str], manifest: Any) -> Any:
    args, path, top = list(argv), CATALOGUE, 3
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if not args:
            raise SyscallError(Errno.EINVAL, f"recommend: {flag} needs a value")
        value = args.pop(0)
        if flag == "--catalogue":
            path = value
        elif flag == "--top" and value.isdigit() and int(value) > 0:
            top = int(value)
        else:
            raise SyscallError(Errno.EINVAL, f"recommend: bad option {flag} {value}")
    profile = " ".join(args).strip()
    if not profile:
        raise SyscallError(
            Errno.EINVAL, "recommend: describe the user, e.g. `recommend likes hiking, budget`"
        )
    items = parse_catalogue((await sys.call("fs_read", path=path)).data)
    if not items:
        raise SyscallError(Errno.ENODATA, f"recommend: {path} has no items")
    ranked = rank(items, profile)[:top]
    listing = "\n".join(f"- {i['title']}: {i.get('description', '')}" for _, i in ranked)
    text = await ask(
        sys,
        [
            {"role": "system", "content": manifest.system},
            {"role": "user", "content": f"Customer: {profile}\nItems:\n{listing}"},
        ],
        max_tokens=96,
        temperature=0.0,
    )
    return {
        "ranking": [{"id": i["id"], "title": i["title"], "score": round(s, 4)} for s, i in ranked],
        "text": text,
    }
