"""Text helpers of summarize: a module of the app, imported with `import text`."""

import re

WORD = re.compile(r"\S+")


def clip(body, words=200):
    """The first `words` words of `body`: enough for a summary, bounded for a small model."""
    found = WORD.findall(body)
    return " ".join(found[:words]) + (" ..." if len(found) > words else "")


def count_words(body):
    return len(WORD.findall(body))
