"""The one redactor: what looks like a secret never reaches an output.

Every value the doctor reads from a target (stack locals, source lines) goes
through here before it enters the report model, so that every renderer (JSON
included) shows the same redacted text.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

#: Fragments of names whose values are secrets (matched case-insensitively, anywhere in the name).
_FRAGMENTS = r"passw|passphrase|pwd|secret|token|api_?key|auth|credential|private|cookie|session"

_SECRET_NAME = re.compile(rf"{_FRAGMENTS}|(?:^|_)key(?:$|_)", re.IGNORECASE)

# A string literal assigned to (or passed as) a secret-looking name: `password="x"`, `API_KEY = 'x'`.
_SECRET_LITERAL = re.compile(
    rf"""(\b(?:\w*(?:{_FRAGMENTS})\w*|\w*_key|key)["']?\s*[=:]\s*)(["'])[^"']*\2""",
    re.IGNORECASE,
)

# "scheme://user:password@host" inside any value, e.g. a database DSN.
_URL_PASSWORD = re.compile(r"(://[^:/@\s\"']+:)[^@\s\"']+@")


def is_secret_name(name: str) -> bool:
    """Whether a variable's name suggests its value must not be shown."""
    return _SECRET_NAME.search(name) is not None


def redact_url_passwords(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` hidden."""
    return _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)


def redact_code(line: str) -> str:
    """A source line with string literals assigned to secret-looking names, and URL passwords, hidden."""
    line = _SECRET_LITERAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", line)
    return redact_url_passwords(line)


def redact_local(name: str, shown: str | None) -> str:
    """How a stack local is shown: hidden for a secret-looking name, URL passwords hidden otherwise."""
    if is_secret_name(name):
        return REDACTED
    if shown is None:
        return "<unavailable>"
    return redact_url_passwords(shown)


def redact_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """A command line with secrets hidden: `--password x`, `--token=x`, `API_KEY=x`, URL passwords."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append(REDACTED)
            hide_next = False
            continue
        name, equals, _ = arg.partition("=")
        if equals and is_secret_name(name.lstrip("-")):
            shown.append(f"{name}={REDACTED}")
            continue
        hide_next = arg.startswith("-") and not equals and is_secret_name(arg.lstrip("-"))
        shown.append(redact_url_passwords(arg))
    return tuple(shown)


__all__ = [
    "REDACTED",
    "is_secret_name",
    "redact_argv",
    "redact_code",
    "redact_local",
    "redact_url_passwords",
]
