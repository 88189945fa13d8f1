"""Where the Prefect API is and how to authenticate, read exactly as Prefect 3 reads it.

Without importing `prefect` (that costs two seconds). For each setting the
doctor uses, the first of these that sets it wins, as in Prefect's
`PrefectBaseSettings.settings_customise_sources` (prefect/settings/base.py):

1. the doctor's flags (`--api-url`, `--api-key`);
2. the environment (`PREFECT_API_URL`, ...; names matched case-insensitively);
3. `.env` in the working directory;
4. `prefect.toml` in the working directory, table `[api]` (`url`, `key`, ...);
5. `pyproject.toml` in the working directory, table `[tool.prefect.api]`;
6. the active profile of `profiles.toml` (`PREFECT_API_URL = ...` keys).

A setting that is set but empty (`PREFECT_API_URL=`) still wins, as in Prefect.
The API settings have no aliases: Prefect ignores `PREFECT_API_URL = ...` at the
top of prefect.toml (only `[api] url` counts), although `prefect config view`
lists it. `PREFECT_API_SSL_CERT_FILE` defaults to `SSL_CERT_FILE`.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.prefect_names import (
    API_AUTH_STRING_SETTING,
    API_KEY_SETTING,
    API_SSL_CERT_FILE_SETTING,
    API_TLS_INSECURE_SKIP_VERIFY_SETTING,
    API_URL_SETTING,
)
from prefect_cancel_doctor.core.redact import redact_url_passwords
from prefect_cancel_doctor.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: The settings the doctor reads, by name, with their field in Prefect's `[api]` table.
API_FIELDS = {
    API_URL_SETTING: "url",
    API_KEY_SETTING: "key",
    API_AUTH_STRING_SETTING: "auth_string",
    API_TLS_INSECURE_SKIP_VERIFY_SETTING: "tls_insecure_skip_verify",
    API_SSL_CERT_FILE_SETTING: "ssl_cert_file",
}
API_SETTINGS = tuple(API_FIELDS)
#: Any of these set (to anything) makes Prefect ignore profiles (`prefect.settings.sources._is_test_mode`).
_TEST_MODE = (
    "PREFECT_TEST_MODE",
    "PREFECT_UNIT_TEST_MODE",
    "PREFECT_TESTING_UNIT_TEST_MODE",
    "PREFECT_TESTING_TEST_MODE",
)
#: pydantic's spellings of a boolean.
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


@dataclass(frozen=True)
class Connection:
    """A resolved Prefect API connection. `repr` never shows the secrets."""

    api_url: str
    api_key: str | None = field(default=None, repr=False)
    auth_string: str | None = field(default=None, repr=False)
    verify: bool | str = True
    #: Where the API URL came from, for error messages ("flag", "environment", ".env",
    #: "prefect.toml", "pyproject.toml", "profile 'x'").
    source: str = "flag"
    #: Where each setting that is set came from: ("PREFECT_API_KEY", ".env"), ...
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def display_url(self) -> str:
        """The API URL as it may be printed: a password in its userinfo is hidden."""
        return redact_url_passwords(self.api_url)

    @property
    def is_cloud(self) -> bool:
        """True for a Prefect Cloud workspace URL."""
        return "/accounts/" in self.api_url and "/workspaces/" in self.api_url

    def source_of(self, setting: str) -> str | None:
        """Where `setting` (e.g. "PREFECT_API_KEY") came from; None when it is not set."""
        return dict(self.sources).get(setting)


# -- the working directory's files ---------------------------------------------


@dataclass(frozen=True)
class _Files:
    """What Prefect reads from the working directory: `.env`, `prefect.toml`, `pyproject.toml`."""

    dotenv: dict[str, str | None]
    prefect_toml: dict[str, Any]
    #: pyproject.toml's `[tool.prefect]` table.
    pyproject: dict[str, Any]


def _read_files(cwd: Path, env: Mapping[str, str]) -> _Files:
    dotenv_path = cwd / ".env"
    dotenv = parse_dotenv(_read_text(dotenv_path), env) if _is_file(dotenv_path) else {}
    pyproject = _table(_read_toml(cwd / "pyproject.toml"), "tool", "prefect")
    return _Files(dotenv, _read_toml(cwd / "prefect.toml"), pyproject)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {visible(str(exc), 300)}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; {} when there is none. Invalid TOML fails, as it fails Prefect."""
    if not _is_file(path):
        return {}
    try:
        data: dict[str, Any] = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"cannot read {path}: invalid TOML ({visible(str(exc), 300)})",
            hint="Prefect reads this file too and fails on it the same way",
        ) from exc
    return data


def _table(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """A nested table (`_table(d, "api")` is `[api]`), {} where it is missing or not a table."""
    for key in keys:
        value = data.get(key)
        if not isinstance(value, dict):
            return {}
        data = value
    return dict(data)


# -- .env, parsed as python-dotenv parses it -------------------------------------
#
# pydantic-settings reads `.env` with python-dotenv's `dotenv_values`; importing
# python-dotenv costs ~0.3 s and it comes only with Prefect, so its grammar is
# ported here (python-dotenv 1.x, dotenv/parser.py and variables.py).

_MULTILINE_WHITESPACE = re.compile(r"\s*", re.MULTILINE)
_WHITESPACE = re.compile(r"[^\S\r\n]*")
_EXPORT = re.compile(r"(?:export[^\S\r\n]+)?")
_SINGLE_QUOTED_KEY = re.compile(r"'([^']+)'")
_UNQUOTED_KEY = re.compile(r"([^=\#\s]+)")
_EQUAL_SIGN = re.compile(r"(=[^\S\r\n]*)")
_SINGLE_QUOTED_VALUE = re.compile(r"'((?:\\.|[^'\\])*)'", re.DOTALL)
_DOUBLE_QUOTED_VALUE = re.compile(r'"((?:\\.|[^"\\])*)"', re.DOTALL)
_UNQUOTED_VALUE = re.compile(r"([^\r\n]*)")
_COMMENT = re.compile(r"(?:[^\S\r\n]*#[^\r\n]*)?")
_END_OF_LINE = re.compile(r"[^\S\r\n]*(?:\r\n|\n|\r|$)")
_REST_OF_LINE = re.compile(r"[^\r\n]*(?:\r|\n|\r\n)?")
_DOUBLE_QUOTE_ESCAPES = re.compile(r"\\[\\'\"abfnrtv]")
_SINGLE_QUOTE_ESCAPES = re.compile(r"\\[\\']")
_VARIABLE = re.compile(r"\$\{(?P<name>[^\}:]*)(?::-(?P<default>[^\}]*))?\}")


class _NoMatch(Exception):
    pass


def _match(pattern: re.Pattern[str], text: str, pos: int) -> re.Match[str]:
    found = pattern.match(text, pos)
    if found is None:
        raise _NoMatch
    return found


def _unescape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda m: codecs.decode(m.group(0), "unicode-escape"), text)


def _bindings(text: str) -> Iterator[tuple[str, str | None]]:
    """(key, value) of each valid line; value None for a key without `=`. Bad lines are skipped."""
    pos = 0
    while pos < len(text):
        pos = _match(_MULTILINE_WHITESPACE, text, pos).end()
        if pos >= len(text):
            return
        try:
            pos = _match(_EXPORT, text, pos).end()
            key = None
            if not text.startswith("#", pos):
                found = _match(_SINGLE_QUOTED_KEY if text.startswith("'", pos) else _UNQUOTED_KEY, text, pos)
                key, pos = found.group(1), found.end()
            pos = _match(_WHITESPACE, text, pos).end()
            value = None
            if text.startswith("=", pos):
                equal_sign = _match(_EQUAL_SIGN, text, pos)
                pos = equal_sign.end()
                value, pos = _dotenv_value(text, pos, after_space=len(equal_sign.group(1)) > 1)
            pos = _match(_COMMENT, text, pos).end()
            pos = _match(_END_OF_LINE, text, pos).end()
        except _NoMatch:
            pos = _match(_REST_OF_LINE, text, pos).end()
            continue
        if key is not None:
            yield key, value


def _dotenv_value(text: str, pos: int, *, after_space: bool) -> tuple[str, int]:
    char = text[pos : pos + 1]
    if after_space and char == "#":  # `KEY= # comment` is empty; `KEY=#x` is "#x"
        return "", pos
    if char == "'":
        found = _match(_SINGLE_QUOTED_VALUE, text, pos)
        return _unescape(_SINGLE_QUOTE_ESCAPES, found.group(1)), found.end()
    if char == '"':
        found = _match(_DOUBLE_QUOTED_VALUE, text, pos)
        return _unescape(_DOUBLE_QUOTE_ESCAPES, found.group(1)), found.end()
    if char in ("", "\n", "\r"):
        return "", pos
    found = _match(_UNQUOTED_VALUE, text, pos)
    return re.sub(r"\s+#.*", "", found.group(1)).rstrip(), found.end()


def parse_dotenv(text: str, env: Mapping[str, str]) -> dict[str, str | None]:
    """A `.env` file's variables as `dotenv.dotenv_values` gives them.

    `${NAME}` and `${NAME:-default}` are expanded from the file's earlier lines,
    else `env`, as python-dotenv does (its values win over the environment's).
    """
    values: dict[str, str | None] = {}
    for key, raw in _bindings(text.removeprefix("\ufeff")):
        if raw is None:
            values[key] = None
            continue
        scope: dict[str, str | None] = {**env, **values}

        def expand(found: re.Match[str], scope: dict[str, str | None] = scope) -> str:
            value = scope.get(found["name"], found["default"] or "")
            return value if value is not None else ""

        values[key] = _VARIABLE.sub(expand, raw)
    return values


# -- profiles --------------------------------------------------------------------


def profiles_path(env: Mapping[str, str], cwd: Path | None = None, files: _Files | None = None) -> Path:
    """The profiles file Prefect would read (`prefect.settings.sources._get_profiles_path`).

    `PREFECT_PROFILES_PATH` from the environment, else from `.env`, else
    `profiles_path` in prefect.toml or pyproject.toml's `[tool.prefect]`, else
    `$PREFECT_HOME/profiles.toml` (only the environment's PREFECT_HOME counts).
    """
    cwd = Path.cwd() if cwd is None else cwd
    files = _read_files(cwd, env) if files is None else files
    for value in (
        env.get("PREFECT_PROFILES_PATH"),
        files.dotenv.get("PREFECT_PROFILES_PATH"),
        files.prefect_toml.get("profiles_path"),
        files.pyproject.get("profiles_path"),
    ):
        if value:
            return cwd / Path(str(value)).expanduser()
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    return cwd / home / "profiles.toml"


def read_profile(
    env: Mapping[str, str], name: str | None, cwd: Path | None = None, files: _Files | None = None
) -> tuple[str | None, dict[str, Any]]:
    """The named (else active) profile's settings; (None, {}) when there is no file."""
    path = profiles_path(env, cwd, files)
    try:
        exists = path.is_file()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {path}: {exc.strerror or exc}",
            hint="set PREFECT_HOME (or PREFECT_PROFILES_PATH) to a directory this user can read",
        ) from exc
    if not exists:
        if name:
            raise ConfigurationError(
                f"profile {name!r} not found: {path} does not exist",
                hint="list profiles with `prefect profile ls`",
            )
        return None, {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {visible(str(exc), 300)}") from exc
    # Prefect falls back to its default profile ("ephemeral": no API) for an unknown name.
    chosen = str(name or env.get("PREFECT_PROFILE") or data.get("active") or "ephemeral")
    profiles = data.get("profiles")
    profiles = (
        {str(k): v for k, v in profiles.items() if isinstance(v, dict)} if isinstance(profiles, dict) else {}
    )
    if chosen not in profiles:
        if name:
            raise ConfigurationError(
                f"profile {name!r} not found in {path}",
                hint="profiles there: " + (", ".join(profiles) or "none"),
            )
        return chosen, {}
    return chosen, {str(k): v for k, v in profiles[chosen].items()}


# -- resolution ------------------------------------------------------------------


def _valid_url(url: str) -> bool:
    """An http(s) URL with a host and, if given, a port in range."""
    if not url.startswith(("http://", "https://")):
        return False
    try:
        parts = urlsplit(url)
        return bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return False


def _by_name(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values by upper-cased name, as pydantic-settings matches names (the last spelling wins)."""
    return {str(k).upper(): v for k, v in values.items() if v is not None}


def _sources(
    api_url: str | None,
    api_key: str | None,
    profile: str | None,
    env: Mapping[str, str],
    cwd: Path,
) -> list[tuple[str, dict[str, Any]]]:
    """(label, values by setting name) of every source, the one that wins first."""
    files = _read_files(cwd, env)

    def api_table(table: dict[str, Any]) -> dict[str, Any]:
        # A table (e.g. `[api.url]`) where a value belongs is left to "a nested source": ignored.
        return {
            name: value
            for name, key in API_FIELDS.items()
            if (value := table.get(key)) is not None and not isinstance(value, dict)
        }

    profile_name: str | None = None
    profile_values: dict[str, Any] = {}
    if not any(env.get(name) for name in _TEST_MODE):
        profile_name, profile_values = read_profile(env, profile, cwd, files)
    flags = {API_URL_SETTING: api_url, API_KEY_SETTING: api_key}
    return [
        ("flag", {k: v for k, v in flags.items() if v}),
        ("environment", _by_name(env)),
        (".env", _by_name(files.dotenv)),
        ("prefect.toml", api_table(_table(files.prefect_toml, "api"))),
        ("pyproject.toml", api_table(_table(files.pyproject, "api"))),
        (f"profile {profile_name!r}", {k: v for k, v in profile_values.items() if k in API_FIELDS}),
        # APISettings.ssl_cert_file defaults to os.environ["SSL_CERT_FILE"].
        ("environment (SSL_CERT_FILE)", {API_SSL_CERT_FILE_SETTING: env.get("SSL_CERT_FILE")}),
    ]


def _as_bool(value: object, setting: str, source: str) -> bool:
    """A boolean setting as pydantic validates it; anything else fails, as it fails Prefect."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigurationError(
        f"invalid {setting} {visible(str(value), 100)!r} (from {source})",
        hint="use true or false",
    )


def resolve_connection(
    api_url: str | None = None,
    api_key: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> Connection:
    """Resolve the connection: flags, then each of Prefect's sources in its order (module docstring).

    `env` defaults to `os.environ` and `cwd` (where `.env`, prefect.toml and
    pyproject.toml are read) to the working directory.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else Path(cwd)
    chosen: dict[str, tuple[Any, str]] = {}
    for label, values in _sources(api_url, api_key, profile, env, cwd):
        for name in API_FIELDS:
            if name not in chosen and values.get(name) is not None:
                chosen[name] = (values[name], label)

    def text(name: str) -> str | None:
        value = chosen.get(name, (None, ""))[0]
        return str(value) if value not in (None, "") else None

    url = text(API_URL_SETTING)
    source = chosen.get(API_URL_SETTING, (None, ""))[1]
    if not url:
        raise ConfigurationError(
            "no Prefect API configured"
            + (f" ({API_URL_SETTING} is empty in {source})" if API_URL_SETTING in chosen else ""),
            hint="pass --api-url, set PREFECT_API_URL, put `[api] url = ...` in prefect.toml, "
            "or select a profile with a PREFECT_API_URL (`prefect profile use NAME`)",
        )
    if not _valid_url(url):
        raise ConfigurationError(
            f"invalid Prefect API URL {visible(redact_url_passwords(url))!r} (from {source})",
            hint="it looks like http://127.0.0.1:4200/api or "
            "https://api.prefect.cloud/api/accounts/<id>/workspaces/<id>",
        )
    verify: bool | str = True
    insecure = chosen.get(API_TLS_INSECURE_SKIP_VERIFY_SETTING)
    if insecure is not None and _as_bool(insecure[0], API_TLS_INSECURE_SKIP_VERIFY_SETTING, insecure[1]):
        verify = False
    elif cert_file := text(API_SSL_CERT_FILE_SETTING):
        verify = cert_file
    return Connection(
        url.rstrip("/"),
        text(API_KEY_SETTING),
        text(API_AUTH_STRING_SETTING),
        verify,
        source,
        tuple((name, label) for name, (_, label) in chosen.items()),
    )
