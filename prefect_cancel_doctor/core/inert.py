"""Text from outside made inert: what a server, a container or a target says can only be read.

Run names, flow and deployment names, state messages, labels, command lines,
file paths, source lines and error bodies come from people and programs the
on-call does not control. Each is passed through `visible` where it enters the
doctor (the API records, /proc, py-spy, the Docker engine), so no renderer ever
receives a control character: a clear-screen or window-title sequence prints as
the text `\\x1b[2J`, a lone surrogate as `\\udc80`, a right-to-left override as
`\\u202e`, and every output (terminal, Markdown, HTML, JSON, stderr) stays what
the doctor wrote, its tables aligned.
"""

from __future__ import annotations

import re

#: Longest text kept from one outside value; longer ones end with `TRUNCATED`.
MAX_CHARS = 2000
TRUNCATED = "…[truncated]"

# What is written as an escape: every character Unicode calls a control (Cc: C0 but tab,
# DEL, C1), a format character (Cf: the bidi embeddings, overrides, isolates and marks
# that reorder text, U+200E/U+200F/U+061C, zero-width spaces, the BOM, soft hyphens,
# invisible operators, tag characters), a line or paragraph separator (U+2028/U+2029) or
# a lone surrogate (Cs). Two format characters are left: the zero-width non-joiner and
# joiner (U+200C/U+200D) appear in real names (Persian, Indic scripts, emoji sequences).
# Listed by hand (Unicode 15.1) rather than computed, so that importing this costs nothing;
# tests/unit/test_inert.py checks the list against the running Python's Unicode tables.
UNSAFE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00, 0x08),
    (0x0A, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200B),
    (0x200E, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)

_UNSAFE = re.compile(
    "["
    + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in UNSAFE_RANGES)
    + "]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, limit: int = MAX_CHARS) -> str:
    """`text` with every control, format and separator character written as an escape, cut to
    `limit` characters."""
    if text.isprintable() and len(text) <= limit:
        return text  # the common case, in C: no control, format, separator or surrogate character
    if len(text) > limit:
        text = text[:limit] + TRUNCATED
    return _UNSAFE.sub(_escape, text)


def visible_or_none(text: str | None, limit: int = MAX_CHARS) -> str | None:
    """`visible` for optional text."""
    return None if text is None else visible(text, limit)


__all__ = ["MAX_CHARS", "TRUNCATED", "UNSAFE_RANGES", "visible", "visible_or_none"]
