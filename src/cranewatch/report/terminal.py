"""Text for a terminal: what the attacker wrote is shown, never obeyed.

File names in an image, Host headers, MQTT topics, DNS names, profile names: every field a
text renderer prints may come from the adversary. A raw ESC starts an ANSI sequence (colours,
cursor moves, a retitled window, on some terminals a clipboard write); a raw newline or
carriage return in a file name forges a line of the report (``CRITICAL [backdoor] ...``).
``printable`` escapes every character that is not printable (C0 and C1 controls, DEL, line and
paragraph separators, format characters such as the bidirectional overrides, unassigned code
points) the way Python writes them in a string literal; ``printable_lines`` joins a
renderer's lines after escaping each, so only the renderer's own line breaks remain.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["printable", "printable_lines"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``str(text)`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u202e``)."""
    text = str(text)
    if text.isprintable():  # the common case, in C
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def printable_lines(lines: Iterable[str]) -> str:
    """The lines escaped one by one and joined with newlines, ending in one."""
    return "".join(printable(line) + "\n" for line in lines)
