"""support: a customer-service agent answering from the user's FAQ file.

Usage: support QUESTION...      (support --help)

Why retrieve first rather than hand the whole FAQ to the model: FAQs outgrow a
small model's context, and the passages that match the question (BM25 via the
`search` tool, over every file under /support) are what the answer must be
grounded in.  The model is prompted with exactly the words it was trained on
(`support_messages`, from lmos.taskprompts): the best passages, numbered, in
the system turn, and the question.  It answers by restating the passage that
answers, or hands the question to a human (`SUPPORT_HANDOFF`); when retrieval
finds nothing the app hands off without asking the model.
Returns {text, handoff, sources, calls, steps, finish_reason}.
"""

import re

FAQ = "/support/faq.md"
HELP = """usage: support QUESTION...
Answers a customer's question from the FAQ, or says it passes the question to a human.
Needs: /support/faq.md, the FAQ: one question and its answer per paragraph (blank line between).
  Create it in lmosh:  write /support/faq.md <<EOF   (then the paragraphs, then a line EOF)
  or copy a host file: put faq.md /support/faq.md
Every file under /support is searched."""
MISSING = ("no FAQ at " + FAQ + " \u2014 create it: write " + FAQ + " <<EOF (one question and its answer "
           "per paragraph, then a line EOF), or put faq.md " + FAQ)
SOURCE = re.compile(r"^(/support/[^\n]*?): ", re.M)


def passages_of(hits):
    """The passages of the search tool's `PATH: passage` lines (a passage may span lines)."""
    parts = SOURCE.split(hits)
    return [parts[i + 1].strip() for i in range(1, len(parts) - 1, 2) if parts[i + 1].strip()]


def main(args):
    question = " ".join(args).strip()
    if not question:
        raise SyscallError("EINVAL", "ask a question, e.g. `support how do I reset my password` "
                           "(support --help)")
    try:
        fs_stat(path=FAQ)
    except SyscallError as exc:
        if exc.errno == "ENOENT":
            raise SyscallError("ENOENT", MISSING) from None
        raise
    hits = tool_call(name="search", args={"query": question, "path": "/support", "k": 3})["text"]
    passages = passages_of(hits)
    if not passages:  # nothing in the FAQ is about the question: a human must answer
        print(SUPPORT_HANDOFF)
        return {"text": SUPPORT_HANDOFF, "handoff": True, "sources": "", "calls": [], "steps": 0,
                "finish_reason": "answer"}
    out = agent(support_messages(question, passages), tools=[], max_tokens=160, temperature=0.0)
    out["handoff"] = is_handoff(out["text"])
    out["sources"] = hits
    return out


if argv[:1] in (["--help"], ["-h"]):
    print(HELP)
else:
    result = main(argv)
