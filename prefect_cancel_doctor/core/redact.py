"""The one redactor: no secret reaches an output, whether it looks like one or is one the doctor holds.

**By form**, where text enters the doctor. Every value read from a target (stack
locals, source lines, command lines) and every text a server or a credential
plugin sends back goes through here before it enters the report model, so that
every renderer (JSON included) shows the same redacted text:

- command-line options: `--password x`, `--api-key=x`, `API_KEY=x`, `-p x`
  (outside Prefect's own command lines, where it is `--pool`), `-px` for MySQL,
  `redis-cli -a x`, `curl -u user:x`, and the same inside a shell string;
- URL passwords: `postgres://user:x@host`, `redis://:x@host`;
- header values: `Authorization: Bearer x`, `Cookie: x`, `X-Api-Key: x`, a lone `Bearer x`;
- string literals given to secret-looking names: `password="x"`, `{'token': 'x'}`,
  `["--api-key", "x"]` (source lines, locals), and every string literal of a `python -c`
  program that names something secret-looking (`def connect(password)` … `connect("x")`);
- JSON Web Tokens (`eyJ….….…`, as Kubernetes service-account tokens are).

**By value**, wherever output leaves the doctor. Every secret the doctor holds —
the Prefect API key and auth string, the API URL's password, Kubernetes bearer
tokens and basic-auth passwords, exec-plugin tokens, client keys — is registered
by the client that loads it (`hold`, `hold_userinfo`, `hold_url`). `scrub` then
hides it raw, percent-, JSON-, Markdown- and HTML-escaped, base64-encoded alone or
inside a longer base64 text (the Basic header of any user), and cut short at the
end of a text or before a `…[truncated]` marker. It is applied by the redactors
above, by the clients to what servers and plugins send back, to stdout and
stderr (`ScrubbedStream`, installed by `cli.main`), to report files
(`render.write_atomically`), to what is published (`scrub_tree`) and to the
action log.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import threading
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, unquote, urlsplit

from prefect_cancel_doctor.core.inert import TRUNCATED

REDACTED = "<redacted>"

# -- by form ---------------------------------------------------------------------------------------

#: Fragments of names whose values are secrets (matched case-insensitively, anywhere in the name).
_FRAGMENTS = r"passw|passphrase|pwd|secret|token|api[_-]?key|auth|credential|private|cookie|session"

_SECRET_NAME = re.compile(rf"{_FRAGMENTS}|(?:^|_)(?:key|pass)(?:$|_)", re.IGNORECASE)

#: A secret-looking name inside text: `password`, `API_KEY`, `x-api-key`, `db_pass`.
_NAME = rf"(?:[\w-]*(?:{_FRAGMENTS})[\w-]*|[\w-]*[_-](?:key|pass)|key|pass)"

# A string literal assigned to (or passed as, or the value of) a secret-looking name:
# `password="x"`, `API_KEY = 'x'`, `token: str = "x"`, `{'token': 'x'}`, `secret=f"x"`.
_SEPARATOR = r"(?:\s*(?:==|!=|[=:])\s*|\s*:\s*[\w.\[\]|, ]{1,40}?\s*=\s*)"  # also `name: type =`
_SECRET_LITERAL = re.compile(
    rf"""(\b{_NAME}["']?{_SEPARATOR}(?:[rbfu]{{1,2}})?)(["'])[^"'\n]*\2""",
    re.IGNORECASE,
)

# A secret-looking option followed by its value in a list: `["--api-key", "x"]`.
_SECRET_OPTION_LITERAL = re.compile(rf"""(["']-{{1,2}}{_NAME}["']\s*,\s*)(["'])[^"'\n]*\2""", re.IGNORECASE)

# `NAME=value` with no space around `=` and no quote: an environment assignment, a `--flag=x`
# in free text (`TOKEN=abc ./run.sh`). Not applied to source code, where `token=make()` is code.
_SECRET_ASSIGNMENT = re.compile(rf"""(?<![\w-])({_NAME})=(?![="'<])([^\s"',;&)\]}}]+)""", re.IGNORECASE)

# A header with its value, as curl, a log or an echoing server writes it (quoted or not):
# `Authorization: Bearer x`, `"authorization": "Basic x"`, `Cookie: a=b; c=d`, `X-Api-Key: x`.
_HEADER = re.compile(
    r"""(\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?"""
    r"""(?:(?:bearer|basic|token|digest|negotiate|apikey|api-key)\s+)?)([^\s"',;}\]]+)"""
    r"""|(\b(?:set-)?cookie["']?\s*:\s*["']?)([^"'\n]+)"""
    r"""|(\bx-[\w-]*(?:key|token|secret|auth|session)[\w-]*["']?\s*[:=]\s*["']?)([^\s"',;}\]]+)""",
    re.IGNORECASE,
)

# `Bearer x` / `Basic x` anywhere, the value token-like (a digit or a symbol in it: not "Basic auth").
_SCHEME_TOKEN = re.compile(r"\b(bearer|basic)(\s+)(?=[^\s\"']*[\d+/=._~-])[\w.~+/=-]{8,}", re.IGNORECASE)

# A JSON Web Token: three base64url parts, the first one a JSON object (`eyJ`).
_JWT = re.compile(r"\beyJ[\w-]{6,}\.[\w-]{6,}\.[\w-]*")

# `scheme://userinfo@`: the userinfo runs to the last `@` before the host's end, as urllib reads it.
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^\s\"'/?#<>]*)@", re.IGNORECASE)

# A literal or a URL password cut short by `inert.visible` (`password="x…[truncated]`):
# no closing quote, no `@` follows.
_CUT = rf"(?={re.escape(TRUNCATED)})"
_CUT_LITERAL = re.compile(
    rf"""(\b{_NAME}["']?{_SEPARATOR}(?:[rbfu]{{1,2}})?["'])[^"'\n]*{_CUT}""", re.IGNORECASE
)
_CUT_USERINFO = re.compile(
    rf"""(\b[a-z][a-z0-9+.-]*://[^\s"'/?#<>:@]*:)[^\s"'/?#<>@]*{_CUT}""", re.IGNORECASE
)

# What every form above needs: a quote, `=` or `:`, a space, or a JWT's start; what the named ones
# need (plain alternatives, fast to look for); what a lone scheme token needs.
_MAY_HOLD_A_FORM = re.compile(r"[=:\"'\s]|eyJ")
_NAMED = re.compile(rf"{_FRAGMENTS}|key|pass", re.IGNORECASE)
_SCHEMES = re.compile(r"bearer|basic", re.IGNORECASE)

# A command-line word that is an option, or an `option=value` / `NAME=value` one.
_OPTION = re.compile(r"--?[A-Za-z][\w.-]*")
_ASSIGNMENT = re.compile(r"(-{0,2}[A-Za-z_][\w.-]*)=(.*)", re.DOTALL)
# A header name as a command-line word of its own (`docker top` splits `-H "Authorization: Bearer x"`).
_HEADER_WORD = re.compile(r"(?:proxy-)?authorization:?|x-[\w-]*(?:key|token|secret|auth)[\w-]*:", re.I)
_SCHEME_WORD = re.compile(r"bearer|basic|token|digest|negotiate", re.IGNORECASE)

_PYTHON = re.compile(r"(?:python|pypy)[\d.]*")
# A one-line Python string literal, its prefix kept: `"x"`, `b'x'`, `f"{x}"`.
_STRING_LITERAL = re.compile(r"""((?<![\w])[rbfu]{0,2})(["'])(?:\\.|(?!\2)[^\\\n])*\2""", re.IGNORECASE)

#: Programs whose short options take a password: `redis-cli -a x`, `sshpass -p x`, `curl -u user:x`.
_PASSWORD_OPTIONS = {"redis-cli": ("-a",), "curl": ("-u", "--user", "-U", "--proxy-user")}
_MYSQL = ("mysql", "mariadb")


def is_secret_name(name: str) -> bool:
    """Whether a variable's (or an option's) name suggests its value must not be shown."""
    return _SECRET_NAME.search(name.replace("-", "_")) is not None


def _userinfo(match: re.Match[str]) -> str:
    user, colon, password = match.group(2).partition(":")
    if not colon or not password or password == REDACTED:
        return match.group(0)
    return f"{match.group(1)}{user}:{REDACTED}@"


def redact_url_passwords(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` (user may be empty) hidden."""
    return _URL_USERINFO.sub(_userinfo, text) if "://" in text else text


def _header(match: re.Match[str]) -> str:
    head = match.group(1) or match.group(3) or match.group(5)
    return f"{head}{REDACTED}"


def _quoted(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{REDACTED}{match.group(2)}"


def redact_code(line: str) -> str:
    """A source line (or a `python -c` program) with secrets hidden: string literals given to
    secret-looking names, URL passwords, header values, tokens, and every value the doctor holds."""
    line = scrub(line)
    if not _MAY_HOLD_A_FORM.search(line):
        return line  # most words of a command line: a path, a flag, a number
    if _NAMED.search(line):  # each pattern below needs a secret-looking name (`auth` in `Authorization`)
        line = _SECRET_LITERAL.sub(_quoted, line)
        line = _SECRET_OPTION_LITERAL.sub(_quoted, line)
        line = _HEADER.sub(_header, line)
        if TRUNCATED in line:
            line = _CUT_LITERAL.sub(rf"\1{REDACTED}", line)
    if _SCHEMES.search(line):
        line = _SCHEME_TOKEN.sub(rf"\1\2{REDACTED}", line)
    if "eyJ" in line:
        line = _JWT.sub(REDACTED, line)
    if TRUNCATED in line and "://" in line:
        line = _CUT_USERINFO.sub(rf"\1{REDACTED}", line)
    return redact_url_passwords(line)


def redact_text(text: str) -> str:
    """Free text from outside (a server's error body, a plugin's stderr, a stack local's value)
    with secrets hidden: what `redact_code` hides, and `NAME=value` assignments."""
    text = redact_code(text)
    if "=" in text and _NAMED.search(text):
        text = _SECRET_ASSIGNMENT.sub(rf"\1={REDACTED}", text)
    return text


def redact_local(name: str, shown: str | None) -> str:
    """How a stack local is shown: hidden for a secret-looking name, its secrets hidden otherwise."""
    if is_secret_name(name):
        return REDACTED
    if shown is None:
        return "<unavailable>"
    return redact_text(shown)


def redact_program(program: str) -> str:
    """A `python -c` program: what `redact_code` hides, and, when it names anything secret-looking
    (`def connect(password)`, `token`), every string literal in it: a secret passed by position
    (`connect("x")`) has no form of its own."""
    program = redact_code(program)
    return _STRING_LITERAL.sub(_quoted, program) if _SECRET_NAME.search(program) else program


def _is_prefect(argv: tuple[str, ...]) -> bool:
    """A command line of Prefect's (`prefect worker start -p pool`, `python -m prefect.engine`)."""
    return any("prefect" in word.rsplit("/", 1)[-1] for word in argv[:4])


def redact_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """A command line with secrets hidden, its shape kept: the values of secret-looking options
    (`--password x`, `--api-key=x`, `TOKEN=x`), `-p x` but in Prefect's command lines, MySQL's
    `-px`, `redis-cli -a x`, `curl -u user:x`, header values (`-H "Authorization: Bearer x"`),
    and in every word what `redact_text` hides (a `python -c` program's `password="x"`, URL
    passwords); a word holding a shell command is redacted word by word."""
    program = os.path.basename(argv[0]) if argv else ""
    prefect = _is_prefect(argv)
    password_options = _PASSWORD_OPTIONS.get(program, ())
    python = any(_PYTHON.fullmatch(os.path.basename(word)) for word in argv[:3])
    shown: list[str] = []
    # What the previous word asks of this one: hide it, hide the password of `user:password`,
    # or (after `Authorization:`) show an auth scheme and hide the word after it.
    pending: str | None = None
    for arg in argv:
        if pending == "program":
            shown.append(redact_program(arg))
            pending = None
            continue
        if pending == "header" and _SCHEME_WORD.fullmatch(arg):
            shown.append(arg)
            pending = "hide"
            continue
        if pending is not None:
            user, colon, _ = arg.partition(":")
            if REDACTED in arg:  # hidden already (in a shell string, `"Bearer <redacted>"`: its quote kept)
                shown.append(arg)
            else:
                shown.append(f"{user}:{REDACTED}" if pending == "userinfo" and colon else REDACTED)
            pending = None
            continue
        if arg == "-c" and python:
            pending = "program"
        elif arg in password_options:
            pending = "userinfo" if program == "curl" else "hide"
        elif _HEADER_WORD.fullmatch(arg):
            pending = "header"
        elif (
            (_OPTION.fullmatch(arg) is not None and is_secret_name(arg.lstrip("-")))
            or (arg == "-p" and not prefect)
            or arg.lower() == "bearer"
        ):
            pending = "hide"
        assignment = _ASSIGNMENT.fullmatch(arg)
        if assignment and is_secret_name(assignment.group(1).lstrip("-")):
            shown.append(f"{assignment.group(1)}={REDACTED}")
        elif program.startswith(_MYSQL) and arg.startswith("-p") and len(arg) > 2:
            shown.append(f"-p{REDACTED}")
        elif any(space in arg for space in " \t"):
            words = re.split(r"([ \t]+)", redact_text(arg))
            redacted = iter(redact_argv(tuple(words[::2])))
            shown.append("".join(word if i % 2 else next(redacted) for i, word in enumerate(words)))
        else:
            shown.append(redact_text(arg))
    return tuple(shown)


# -- by value --------------------------------------------------------------------------------------

#: The shortest value held by value: a shorter one would hide ordinary words.
MIN_HELD = 6
#: The shortest form (an encoding, a part of a base64 text) hidden by value.
_MIN_FORM = 8
#: The shortest part of a held form hidden where a text was cut (at its end or at TRUNCATED).
_MIN_CUT = 4

_lock = threading.Lock()
_held: set[str] = set()
#: Every form of every held secret, longest first (a base64 form wins over a shorter raw one).
_forms: tuple[str, ...] = ()

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#])")


def _base64_forms(data: bytes) -> set[str]:
    """`data` base64-encoded alone, and as it reads inside a longer base64 text at each of the
    three alignments (the characters that do not depend on the bytes around it)."""
    forms: set[str] = set()
    whole = base64.b64encode(data).decode()
    forms |= {whole, whole.rstrip("=")}
    for offset in range(3):
        # Encoded between bytes of all zeros and of all ones: what differs depends on them.
        zeros = base64.b64encode(b"\0" * offset + data + b"\0\0\0").decode()
        ones = base64.b64encode(b"\xff" * offset + data + b"\xff\xff\xff").decode()
        start = -(-offset * 4 // 3)  # the first character of data's bits alone
        end = start
        while end < len(zeros) and zeros[end] == ones[end]:
            end += 1
        forms.add(zeros[start:end])
    forms |= {form.replace("+", "-").replace("/", "_") for form in forms}
    return {form for form in forms if len(form) >= _MIN_FORM}


def _forms_of(value: str, *, raw: bool = True) -> set[str]:
    """The forms a secret can take in an output."""
    forms = _base64_forms(value.encode())
    if raw:
        forms |= {
            value,
            quote(value, safe=""),
            quote_plus(value, safe=""),
            json.dumps(value)[1:-1],
            _MARKDOWN_SPECIAL.sub(r"\\\1", value),
            html.escape(value),
        }
        # A PEM key: each line of its body on its own (an output may show one line of it).
        lines = (line.strip() for line in value.splitlines())
        forms |= {line for line in lines if len(line) >= 16 and "-----" not in line}
    return {form for form in forms if len(form) >= _MIN_FORM or (raw and form == value)}


def _hold_forms(forms: Iterable[str], key: str) -> None:
    global _forms
    with _lock:
        if key in _held:
            return
        _held.add(key)
        _forms = tuple(sorted(set(_forms) | set(forms), key=len, reverse=True))


def hold(value: str | bytes | None) -> None:
    """Remember a secret the doctor holds (an API key, a token, a password, a private key): from
    now on `scrub` hides it in all its forms. Values shorter than MIN_HELD are not held raw."""
    if value is None:
        return
    given = value.decode(errors="replace") if isinstance(value, bytes) else value
    text = given.strip()  # a token read from a file, with its newline
    if len(text) < MIN_HELD or text in _held:
        return
    _hold_forms(_forms_of(text) | _base64_forms(given.encode()), text)


def hold_userinfo(user: str | None, password: str | None) -> None:
    """Remember a user's password, and `user:password` as a Basic header carries it (base64),
    however short the password."""
    if not password:
        return
    hold(password)
    pair = f"{user or ''}:{password}"
    if pair not in _held:
        _hold_forms(_forms_of(pair, raw=len(pair) >= MIN_HELD), pair)


def hold_url(url: str | None) -> None:
    """Remember the password in a URL's userinfo (`http://user:password@host`), decoded and as written."""
    if not url or "@" not in url:
        return
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return
    if password:
        hold_userinfo(user, password)
        hold_userinfo(unquote(user or ""), unquote(password))


def forget() -> None:
    """Forget every held secret (for tests)."""
    global _forms
    with _lock:
        _held.clear()
        _forms = ()


def _cut_tail(text: str, forms: tuple[str, ...]) -> str:
    """`text` whose end is the start of a held form (the rest cut off) with that start hidden."""
    for form in forms:
        start = text.find(form[0], max(0, len(text) - len(form) + 1))
        while start != -1 and len(text) - start >= _MIN_CUT:
            if form.startswith(text[start:]):
                return text[:start] + REDACTED
            start = text.find(form[0], start + 1)
    return text


def scrub(text: str, *, cut: bool = False) -> str:
    """`text` with every form of every held secret hidden, also where a text was cut short
    before a `…[truncated]` marker; `cut`: `text` itself may end in the middle of one."""
    forms = _forms
    if not forms or not text:
        return text
    for form in forms:
        if form in text:
            text = text.replace(form, REDACTED)
    if TRUNCATED in text:
        parts = text.split(TRUNCATED)
        text = TRUNCATED.join([_cut_tail(part, forms) for part in parts[:-1]] + parts[-1:])
    return _cut_tail(text, forms) if cut else text


def scrub_tree(document: Any) -> Any:
    """A JSON-like document (dicts, lists, strings) with `scrub` applied to every string in it."""
    if not _forms:
        return document
    if isinstance(document, str):
        return scrub(document)
    if isinstance(document, dict):
        return {scrub_tree(key): scrub_tree(value) for key, value in document.items()}
    if isinstance(document, (list, tuple)):
        return [scrub_tree(item) for item in document]
    return document


class ScrubbedStream:
    """A text stream whose text reaches `stream` scrubbed (`scrub`): line by line, and on `flush`,
    so that a secret written in two pieces is still whole when it is looked for. Everything else
    (`isatty`, `fileno`, `encoding`) is the stream's own; its binary `buffer` is not offered, so
    that nothing writes past the scrubbing (click then writes text here)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._pending += text
        end = self._pending.rfind("\n") + 1
        if end:
            self.stream.write(scrub(self._pending[:end]))
            self._pending = self._pending[end:]
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self.stream.write(scrub(pending))
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":
            raise AttributeError(name)
        return getattr(self.stream, name)


__all__ = [
    "MIN_HELD",
    "REDACTED",
    "ScrubbedStream",
    "forget",
    "hold",
    "hold_url",
    "hold_userinfo",
    "is_secret_name",
    "redact_argv",
    "redact_code",
    "redact_local",
    "redact_program",
    "redact_text",
    "redact_url_passwords",
    "scrub",
    "scrub_tree",
]
