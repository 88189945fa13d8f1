"""The doctor reads the connection exactly as Prefect does: checked against the real `prefect config view`.

Each setup is a temporary working directory (`.env`, prefect.toml,
pyproject.toml), a temporary PREFECT_HOME with profiles, and a clean
environment. The real `prefect config view -o json --show-secrets` (one
process per setup, run in parallel) and `resolve_connection(env=..., cwd=...)`
must name the same value and the same source for PREFECT_API_URL, PREFECT_API_KEY
and PREFECT_API_AUTH_STRING, and the URL Prefect really connects to (its
`ui_url` is derived from `api.url`) must be the doctor's.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.clients.settings import Connection, parse_dotenv, resolve_connection
from prefect_cancel_doctor.errors import ConfigurationError

PREFECT = Path(sys.executable).parent / "prefect"
CHECKED = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")
#: `prefect config view`'s names for its sources -> the doctor's.
VIEW_SOURCES = {
    "env": "environment",
    ".env file": ".env",
    "prefect.toml": "prefect.toml",
    "pyproject.toml": "pyproject.toml",
    "profile": "profile",
}

PROFILES = """
active = "main"

[profiles.main]
PREFECT_API_URL = "http://profile-main:4200/api"
PREFECT_API_KEY = "key-from-main"
PREFECT_API_AUTH_STRING = "main:secret"

[profiles.other]
PREFECT_API_URL = "http://profile-other:4200/api"
PREFECT_API_KEY = "key-from-other"
"""


@dataclass(frozen=True)
class Setup:
    """A working directory, a PREFECT_HOME and an environment, and what Prefect makes of them."""

    files: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    profiles: str | None = None
    #: `prefect --profile NAME` / the doctor's `--profile NAME`.
    profile_flag: str | None = None
    #: (value, source) of each setting that is set; the source as the doctor names it.
    expected: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    #: `prefect config view` lists settings Prefect itself ignores (a top-level
    #: PREFECT_API_URL in prefect.toml) and misses some it uses (a lower-case name
    #: in .env): there only the URL Prefect really uses is compared.
    listing_is_wrong: bool = False


SETUPS: dict[str, Setup] = {
    "environment only": Setup(
        env={"PREFECT_API_URL": "http://env:4200/api", "PREFECT_API_KEY": "key-from-env"},
        expected={
            "PREFECT_API_URL": ("http://env:4200/api", "environment"),
            "PREFECT_API_KEY": ("key-from-env", "environment"),
        },
    ),
    "profile only": Setup(
        profiles=PROFILES,
        expected={
            "PREFECT_API_URL": ("http://profile-main:4200/api", "profile 'main'"),
            "PREFECT_API_KEY": ("key-from-main", "profile 'main'"),
            "PREFECT_API_AUTH_STRING": ("main:secret", "profile 'main'"),
        },
    ),
    "prefect.toml only": Setup(
        files={
            "prefect.toml": '[api]\nurl = "http://toml:4200/api"\nkey = "key-from-toml"\n'
            'auth_string = "toml:secret"\n'
        },
        expected={
            "PREFECT_API_URL": ("http://toml:4200/api", "prefect.toml"),
            "PREFECT_API_KEY": ("key-from-toml", "prefect.toml"),
            "PREFECT_API_AUTH_STRING": ("toml:secret", "prefect.toml"),
        },
    ),
    ".env only": Setup(
        files={
            ".env": "# the team's settings\n"
            'export PREFECT_API_URL="http://${HOST_FROM_ENV}:4200/api"  # quoted, expanded\n'
            "PREFECT_API_KEY=key-from-dotenv # an inline comment\n"
            # python-dotenv expands variables in single quotes too
            "PREFECT_API_AUTH_STRING='dotenv:${UNSET_VARIABLE:-se}cret'\n"
        },
        env={"HOST_FROM_ENV": "dotenv-host"},
        expected={
            "PREFECT_API_URL": ("http://dotenv-host:4200/api", ".env"),
            "PREFECT_API_KEY": ("key-from-dotenv", ".env"),
            "PREFECT_API_AUTH_STRING": ("dotenv:secret", ".env"),
        },
    ),
    "pyproject.toml [tool.prefect], its profiles_path": Setup(
        files={
            "pyproject.toml": '[project]\nname = "x"\n\n'
            '[tool.prefect]\nprofiles_path = "team-profiles.toml"\n\n'
            '[tool.prefect.api]\nurl = "http://pyproject:4200/api"\n',
            "team-profiles.toml": PROFILES.replace("main", "team"),
        },
        profiles=PROFILES,  # not read: pyproject.toml names another file
        expected={
            "PREFECT_API_URL": ("http://pyproject:4200/api", "pyproject.toml"),
            "PREFECT_API_KEY": ("key-from-team", "profile 'team'"),
            "PREFECT_API_AUTH_STRING": ("team:secret", "profile 'team'"),
        },
    ),
    "all at once: environment > .env > prefect.toml > pyproject.toml > profile": Setup(
        files={
            ".env": "PREFECT_API_URL=http://dotenv:4200/api\nPREFECT_API_KEY=key-from-dotenv\n",
            "prefect.toml": '[api]\nurl = "http://toml:4200/api"\nkey = "key-from-toml"\n'
            'auth_string = "toml:secret"\n',
            "pyproject.toml": '[tool.prefect.api]\nurl = "http://pyproject:4200/api"\n'
            'auth_string = "pyproject:secret"\n',
        },
        env={"PREFECT_API_URL": "http://env:4200/api"},
        profiles=PROFILES,
        expected={
            "PREFECT_API_URL": ("http://env:4200/api", "environment"),
            "PREFECT_API_KEY": ("key-from-dotenv", ".env"),
            "PREFECT_API_AUTH_STRING": ("toml:secret", "prefect.toml"),
        },
    ),
    "prefect.toml over the profile PREFECT_PROFILE selects, profiles file named in .env": Setup(
        files={
            ".env": "PREFECT_PROFILES_PATH=elsewhere/profiles.toml\n",
            "elsewhere/profiles.toml": PROFILES,
            "prefect.toml": '[api]\nurl = "http://toml:4200/api"\n',
        },
        env={"PREFECT_PROFILE": "other"},
        expected={
            "PREFECT_API_URL": ("http://toml:4200/api", "prefect.toml"),
            "PREFECT_API_KEY": ("key-from-other", "profile 'other'"),
        },
    ),
    "the --profile flag selects a profile, the environment still wins": Setup(
        env={"PREFECT_API_URL": "http://env:4200/api"},
        profiles=PROFILES,
        profile_flag="other",
        expected={
            "PREFECT_API_URL": ("http://env:4200/api", "environment"),
            "PREFECT_API_KEY": ("key-from-other", "profile 'other'"),
        },
    ),
    "aliases: a top-level PREFECT_API_URL in prefect.toml is ignored, a lower-case .env name is not": Setup(
        files={
            "prefect.toml": 'PREFECT_API_URL = "http://toml-top-level:4200/api"\n',
            ".env": "prefect_api_url=http://dotenv-lower-case:4200/api\n",
        },
        profiles=PROFILES,
        expected={
            "PREFECT_API_URL": ("http://dotenv-lower-case:4200/api", ".env"),
            "PREFECT_API_KEY": ("key-from-main", "profile 'main'"),
            "PREFECT_API_AUTH_STRING": ("main:secret", "profile 'main'"),
        },
        listing_is_wrong=True,
    ),
    "an empty PREFECT_API_URL in the environment hides the profile's": Setup(
        env={"PREFECT_API_URL": ""},
        profiles=PROFILES,
        expected={
            "PREFECT_API_URL": ("", "environment"),
            "PREFECT_API_KEY": ("key-from-main", "profile 'main'"),
            "PREFECT_API_AUTH_STRING": ("main:secret", "profile 'main'"),
        },
    ),
}


def _stage(root: Path, setup: Setup) -> tuple[Path, dict[str, str]]:
    """The working directory and the clean environment of one setup."""
    cwd, home = root / "work", root / "prefect-home"
    for directory in (cwd, home):
        directory.mkdir(parents=True)
    for name, text in setup.files.items():
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(text)
    if setup.profiles is not None:
        (home / "profiles.toml").write_text(setup.profiles)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),  # no ~/.prefect of the machine's user
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **setup.env,
    }
    return cwd, env


def _config_view(cwd: Path, env: dict[str, str], profile: str | None) -> dict[str, Any]:
    command = [str(PREFECT), *(("--profile", profile) if profile else ()), "config", "view"]
    result = subprocess.run(
        [*command, "-o", "json", "--show-sources", "--show-secrets"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def _doctor(cwd: Path, env: dict[str, str], profile: str | None) -> Connection | ConfigurationError:
    try:
        return resolve_connection(profile=profile, env=env, cwd=cwd)
    except ConfigurationError as exc:
        return exc


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[dict[str, Any], Connection | ConfigurationError]]:
    """Setup name -> (what `prefect config view` says, what the doctor resolves)."""
    if not PREFECT.exists():
        pytest.skip(f"{PREFECT} is not installed (pip install -e '.[test]')")
    staged = {name: _stage(tmp_path_factory.mktemp("setup"), setup) for name, setup in SETUPS.items()}
    with ThreadPoolExecutor(max_workers=len(SETUPS)) as pool:
        views = {
            name: pool.submit(_config_view, cwd, env, SETUPS[name].profile_flag)
            for name, (cwd, env) in staged.items()
        }
        return {
            name: (views[name].result(), _doctor(cwd, env, SETUPS[name].profile_flag))
            for name, (cwd, env) in staged.items()
        }


def _doctor_values(connection: Connection) -> dict[str, tuple[str, str]]:
    values = {
        "PREFECT_API_URL": connection.api_url,
        "PREFECT_API_KEY": connection.api_key,
        "PREFECT_API_AUTH_STRING": connection.auth_string,
    }
    return {
        name: (value, connection.source_of(name) or "?")
        for name, value in values.items()
        if value is not None
    }


@pytest.mark.parametrize("name", list(SETUPS))
def test_the_doctor_reads_what_prefect_config_view_shows(
    name: str, outcomes: dict[str, tuple[dict[str, Any], Connection | ConfigurationError]]
) -> None:
    # GIVEN one setup, read by the real `prefect config view` and by the doctor
    setup = SETUPS[name]
    view, doctor = outcomes[name]
    listed = {
        s["name"]: (s["value"], VIEW_SOURCES[s["source"]]) for s in view["settings"] if s["name"] in CHECKED
    }
    expected_url = setup.expected["PREFECT_API_URL"][0]

    # THEN Prefect connects to the expected URL (its ui_url is derived from api.url) ...
    assert view.get("ui_url") == (expected_url.removesuffix("/api") or None)
    # ... and, where its listing is right, lists the expected values and sources
    generic = {k: (v, s.split(" ")[0]) for k, (v, s) in setup.expected.items()}
    if not setup.listing_is_wrong:
        assert listed == generic
    profiles = {source for _, source in setup.expected.values() if source.startswith("profile")}
    assert profiles <= {f"profile {view['profile']!r}"}

    # AND the doctor resolves the same values from the same sources
    if not expected_url:
        assert isinstance(doctor, ConfigurationError)
        assert "no Prefect API configured (PREFECT_API_URL is empty in environment)" in str(doctor)
        return
    assert isinstance(doctor, Connection), doctor
    assert _doctor_values(doctor) == setup.expected
    assert doctor.source == setup.expected["PREFECT_API_URL"][1]


# -- .env: the doctor's parser against python-dotenv's, which Prefect uses --------


DOTENV_CASES = [
    'A=1\nB="two # not a comment"\nC=three # a comment\nexport D=four\n',
    "E='single ${HOME} \\' quote'\nF=\"dq \\n ${HOME} ${NOPE:-dflt} ${A}\"\nA=x\nG=${A}\n",
    "H\nI=\nJ= # c\nK=#x\n  L  =  spaced  \n'M'=quoted key\n=bad\nN=\"unterminated\nO=ok\n",
    '\ufeffP=bom\nQ=two\nexport  R=s\n#comment=1\nS="multi\nline"\nT=a\\tb\n',
    'U="a" junk\nV=1\nW=${H:-d}${I:-e}${HOME:-f}\n',
]


@pytest.mark.parametrize("text", DOTENV_CASES)
def test_dotenv_parsing_matches_python_dotenv(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = pytest.importorskip("dotenv")
    monkeypatch.setenv("HOME", "/home/someone")
    for name in ("A", "H", "I", "NOPE"):
        monkeypatch.delenv(name, raising=False)
    assert parse_dotenv(text, os.environ) == dict(dotenv.dotenv_values(stream=io.StringIO(text)))
