"""Connection resolution: flags > environment > profile, secrets never in repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_cancel_doctor.errors import ConfigurationError
from prefect_cancel_doctor.settings import resolve_connection

PROFILES = """
active = "local"

[profiles.local]
PREFECT_API_URL = "http://127.0.0.1:4200/api"

[profiles.cloud]
PREFECT_API_URL = "https://api.prefect.cloud/api/accounts/a1/workspaces/w1"
PREFECT_API_KEY = "pnu_secret_from_profile"
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "profiles.toml").write_text(PROFILES)
    return tmp_path


def test_active_profile_is_used_when_nothing_else_is_set(home: Path) -> None:
    conn = resolve_connection(env={"PREFECT_HOME": str(home)})
    assert conn.api_url == "http://127.0.0.1:4200/api"
    assert conn.api_key is None
    assert not conn.is_cloud


def test_profile_flag_selects_another_profile_with_its_key(home: Path) -> None:
    conn = resolve_connection(profile="cloud", env={"PREFECT_HOME": str(home)})
    assert conn.is_cloud
    assert conn.api_key == "pnu_secret_from_profile"
    assert "pnu_secret" not in repr(conn)


def test_environment_beats_profile_and_flags_beat_environment(home: Path) -> None:
    env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": "http://10.0.0.9:4200/api/"}
    assert resolve_connection(env=env).api_url == "http://10.0.0.9:4200/api"
    assert resolve_connection(api_url="http://h:1/api", env=env).api_url == "http://h:1/api"


def test_prefect_profile_variable_selects_the_profile(home: Path) -> None:
    env = {"PREFECT_HOME": str(home), "PREFECT_PROFILE": "cloud"}
    assert resolve_connection(env=env).is_cloud


def test_auth_string_and_tls_settings_are_read(home: Path) -> None:
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_AUTH_STRING": "admin:pass",
        "PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "true",
    }
    conn = resolve_connection(env=env)
    assert conn.auth_string == "admin:pass"
    assert conn.verify is False


def test_missing_configuration_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no Prefect API configured") as info:
        resolve_connection(env={"PREFECT_HOME": str(tmp_path)})
    assert info.value.exit_code == 2


def test_unknown_profile_names_the_known_ones(home: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_connection(profile="nope", env={"PREFECT_HOME": str(home)})
    assert "local" in (info.value.hint or "")


def test_url_without_scheme_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="invalid Prefect API URL"):
        resolve_connection(api_url="127.0.0.1:4200/api", env={"PREFECT_HOME": str(tmp_path)})
