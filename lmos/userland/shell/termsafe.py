"""Terminal-safe text: what a process wrote, shown so that it cannot drive the user's terminal.

Process output is data.  Written raw to a terminal, an escape sequence in it
is a command to the terminal: OSC 52 sets the user's clipboard, OSC 0 the
window title, CSI sequences move the cursor and erase lines (so an app can
overwrite what the shell printed, a confirmation prompt included), and bidi
overrides make text read differently from what it is.  Every front end
(lmosh, ``lmos run``, results, errors, ``cat``) therefore passes process text
through :func:`neutralize` (or, for a stream, a :class:`Neutralizer`), which
replaces each such character with a visible escaped form (``ESC`` becomes
``\\x1b``, U+202E becomes ``\\u202e``) and keeps newlines and tabs.

Neutralising character by character, never by recognising whole sequences,
is what makes streams safe: a sequence split across two tokens loses its ESC
in the first token whatever follows in the second.  The only state a stream
needs is a trailing carriage return, held until the next chunk says whether it
starts a line ending (``\\r\\n`` is shown as a newline, a lone ``\\r``, which
would return the cursor to overwrite the line, is escaped).

JSON (``--json`` results) escapes C0 controls itself; :func:`json_safe`
escapes what it leaves (DEL, C1, bidi controls, line separators, lone
surrogates) as ``\\uXXXX``, so the document stays valid JSON.
"""

from __future__ import annotations

import re

# C0 controls but newline and tab, DEL, C1 controls, the bidi embeddings/overrides/isolates and marks,
# the Unicode line and paragraph separators, and lone surrogates (which cannot even be encoded).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# What JSON leaves unescaped of the above (json.dumps escapes every C0 control itself).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def visible(ch: str) -> str:
    """The escaped form of one unsafe character: ``\\x1b`` below 256, else ``\\u202e``."""
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def _sub(m: re.Match[str]) -> str:
    return visible(m.group())


def neutralize(text: str) -> str:
    """``text`` with every character that could drive a terminal shown escaped; ``\\r\\n`` becomes ``\\n``."""
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    return _UNSAFE.sub(_sub, text)


def json_safe(doc: str) -> str:
    """A JSON document (from ``json.dumps(..., ensure_ascii=False)``) with what JSON leaves raw escaped."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", doc)


class Neutralizer:
    """:func:`neutralize` for a stream of chunks (tokens): feed each chunk, flush at the end."""

    def __init__(self) -> None:
        self._cr = False  # the previous chunk ended in \r: is it the start of \r\n?

    def feed(self, chunk: str) -> str:
        if self._cr:
            chunk = "\r" + chunk
            self._cr = False
        if chunk.endswith("\r"):
            chunk = chunk[:-1]
            self._cr = True
        return neutralize(chunk)

    def flush(self) -> str:
        """What is still held (a final lone ``\\r``, shown escaped)."""
        held, self._cr = self._cr, False
        return visible("\r") if held else ""
