"""recommend: rank catalogue items for a user profile, then let the model pitch the top ones.

Usage: recommend [--catalogue PATH] [--top N] PROFILE...

Ranking is BM25+ (bm25.py) of the profile against each item's title, tags and
description: deterministic, explainable, and cheap for thousands of items.
The model only writes the explanation, so a small model cannot reorder or
invent items; it is prompted with exactly the words it was trained on
(`recommend_messages`, from lmos.taskprompts: the top items, best first, in
the system turn) and names the top item with one of its own attributes.  The
catalogue is a file in the user's tree (default /recommend/catalogue.jsonl),
one JSON object per line ({"id", "title", "description", "tags"}) or plain
`title: text` lines.
Returns {"ranking": [{id, title, score}], "text": the pitch}.
"""

import json

import bm25

CATALOGUE = "/recommend/catalogue.jsonl"
HELP = """usage: recommend [--catalogue PATH] [--top N] PROFILE...
Ranks the catalogue's items for a customer PROFILE (BM25 over title, tags and description) and has the
model recommend the best one, saying why.
Needs: /recommend/catalogue.jsonl (or --catalogue PATH under /recommend), one item per line:
  a JSON object {"id": ..., "title": ..., "tags": [...], "description": ...}
  or a plain `Title: description` line.
  Create it in lmosh:  write /recommend/catalogue.jsonl <<EOF   (then the items, then a line EOF)
  or copy a host file: put catalogue.jsonl /recommend/catalogue.jsonl"""


def parse_catalogue(text):
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SyscallError("EINVAL", "catalogue line " + str(n) + ": " + exc.msg) from None
            if not isinstance(item, dict) or "title" not in item:
                raise SyscallError("EINVAL", "catalogue line " + str(n) + ": an item needs a title")
        else:
            title, _, desc = line.partition(":")
            item = {"title": title.strip(), "description": desc.strip()}
        item.setdefault("id", str(len(items) + 1))
        items.append(item)
    return items


def rank(items, profile):
    docs = [bm25.words(i["title"] + " " + " ".join(i.get("tags") or []) + " " + i.get("description", ""))
            or [""] for i in items]
    s = bm25.scores(docs, bm25.words(profile))
    order = sorted(range(len(items)), key=lambda i: (-s[i], i))
    return [(s[i], items[i]) for i in order]


def read_catalogue(path):
    """The catalogue's text; a missing one is explained in one line that says how to create it."""
    try:
        return fs_read(path=path)["data"]
    except SyscallError as exc:
        if exc.errno == "ENOENT":
            raise SyscallError("ENOENT", "no catalogue at " + path + " \u2014 create it: write " + path
                               + " <<EOF (one item per line: a JSON object or `Title: description`, "
                               "then a line EOF)") from None
        raise


def main(argv):
    args, path, top = list(argv), CATALOGUE, 3
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if not args:
            raise SyscallError("EINVAL", flag + " needs a value")
        value = args.pop(0)
        if flag == "--catalogue":
            path = value
        elif flag == "--top" and value.isdigit() and int(value) > 0:
            top = int(value)
        else:
            raise SyscallError("EINVAL", "bad option " + flag + " " + value)
    profile = " ".join(args).strip()
    if not profile:
        raise SyscallError("EINVAL", "describe the customer, e.g. `recommend likes hiking, budget` "
                           "(recommend --help)")
    items = parse_catalogue(read_catalogue(path))
    if not items:
        raise SyscallError("ENODATA", path + " has no items \u2014 add one per line: write " + path
                           + " <<EOF")
    ranked = rank(items, profile)[:top]
    text = ask(recommend_messages(profile, [i for _, i in ranked]), max_tokens=128, temperature=0.0)
    return {"ranking": [{"id": i["id"], "title": i["title"], "score": round(s, 4)} for s, i in ranked],
            "text": text}


if argv[:1] in (["--help"], ["-h"]):
    print(HELP)
else:
    result = main(argv)
