"""Text from outside made inert: what a server, a container or a target says can only be read.

Run names, flow and deployment names, state messages, labels, command lines,
file paths, source lines and error bodies come from people and programs the
on-call does not control. Each is passed through `visible` where it enters the
doctor (the API records, /proc, py-spy, the Docker engine), so no renderer ever
receives a control character: a clear-screen or window-title sequence prints as
the text `\\x1b[2J`, a lone surrogate as `\\udc80`, and every output (terminal,
Markdown, HTML, JSON, stderr) stays what the doctor wrote.
"""

from __future__ import annotations

import re

#: Longest text kept from one outside value; longer ones end with `TRUNCATED`.
MAX_CHARS = 2000
TRUNCATED = "…[truncated]"

# C0 controls but tab, DEL, C1 controls, lone surrogates, and the Unicode
# controls that reorder or hide text (bidi overrides and isolates, zero-width
# joiners are left: they appear in real names).
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, limit: int = MAX_CHARS) -> str:
    """`text` with every control character written as an escape, cut to `limit` characters."""
    if text.isprintable() and len(text) <= limit:
        return text  # the common case, in C: no control, format or surrogate character
    if len(text) > limit:
        text = text[:limit] + TRUNCATED
    return _UNSAFE.sub(_escape, text)


def visible_or_none(text: str | None, limit: int = MAX_CHARS) -> str | None:
    """`visible` for optional text."""
    return None if text is None else visible(text, limit)


__all__ = ["MAX_CHARS", "TRUNCATED", "visible", "visible_or_none"]
