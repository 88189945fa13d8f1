"""Where the Prefect API is and how to authenticate: flags > environment > profile.

Read the way Prefect reads them, without importing `prefect` (that costs two
seconds): `PREFECT_API_URL`, `PREFECT_API_KEY`, `PREFECT_API_AUTH_STRING` from
the environment, else from the active profile in `$PREFECT_HOME/profiles.toml`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect_cancel_doctor.errors import ConfigurationError
from prefect_cancel_doctor.inert import visible
from prefect_cancel_doctor.redact import redact_url_passwords

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

API_SETTINGS = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_API_TLS_INSECURE_SKIP_VERIFY",
    "PREFECT_API_SSL_CERT_FILE",
)


@dataclass(frozen=True)
class Connection:
    """A resolved Prefect API connection. `repr` never shows the secrets."""

    api_url: str
    api_key: str | None = field(default=None, repr=False)
    auth_string: str | None = field(default=None, repr=False)
    verify: bool | str = True
    #: Where each value came from, for error messages ("flag", "env", "profile 'x'").
    source: str = "flag"

    @property
    def display_url(self) -> str:
        """The API URL as it may be printed: a password in its userinfo is hidden."""
        return redact_url_passwords(self.api_url)

    @property
    def is_cloud(self) -> bool:
        """True for a Prefect Cloud workspace URL."""
        return "/accounts/" in self.api_url and "/workspaces/" in self.api_url


def profiles_path(env: Mapping[str, str]) -> Path:
    """The profiles file Prefect would read."""
    if env.get("PREFECT_PROFILES_PATH"):
        return Path(env["PREFECT_PROFILES_PATH"]).expanduser()
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    return home / "profiles.toml"


def read_profile(env: Mapping[str, str], name: str | None) -> tuple[str | None, dict[str, Any]]:
    """The named (else active) profile's settings; ({}, None) when there is no file."""
    path = profiles_path(env)
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


def _valid_url(url: str) -> bool:
    """An http(s) URL with a host and, if given, a port in range."""
    if not url.startswith(("http://", "https://")):
        return False
    try:
        parts = urlsplit(url)
        return bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return False


def resolve_connection(
    api_url: str | None = None,
    api_key: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Connection:
    """Resolve the connection: flags win over the environment, which wins over the profile."""
    env = os.environ if env is None else env
    profile_name, profile_values = read_profile(env, profile)

    def pick(flag: str | None, key: str) -> tuple[str | None, str]:
        if flag:
            return flag, "flag"
        if env.get(key):
            return env[key], "environment"
        value = profile_values.get(key)
        return (str(value) if value not in (None, "") else None), f"profile {profile_name!r}"

    url, source = pick(api_url, "PREFECT_API_URL")
    if not url:
        raise ConfigurationError(
            "no Prefect API configured",
            hint="pass --api-url, set PREFECT_API_URL, or select a profile with a "
            "PREFECT_API_URL (`prefect profile use NAME`)",
        )
    if not _valid_url(url):
        raise ConfigurationError(
            f"invalid Prefect API URL {visible(redact_url_passwords(url))!r} (from {source})",
            hint="it looks like http://127.0.0.1:4200/api or "
            "https://api.prefect.cloud/api/accounts/<id>/workspaces/<id>",
        )
    key, _ = pick(api_key, "PREFECT_API_KEY")
    auth, _ = pick(None, "PREFECT_API_AUTH_STRING")
    insecure, _ = pick(None, "PREFECT_API_TLS_INSECURE_SKIP_VERIFY")
    cert_file, _ = pick(None, "PREFECT_API_SSL_CERT_FILE")
    verify: bool | str = True
    if insecure and insecure.lower() in ("1", "true", "yes"):
        verify = False
    elif cert_file:
        verify = cert_file
    return Connection(url.rstrip("/"), key, auth, verify, source)
