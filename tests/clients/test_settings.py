"""Connection resolution: flags > environment > .env > prefect.toml > pyproject.toml > profile.

Secrets never in repr; every value says where it came from. (Agreement with the real
`prefect config view` is in test_settings_like_prefect.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_cancel_doctor.clients.settings import resolve_connection
from prefect_cancel_doctor.errors import ConfigurationError

PROFILES = """
active = "local"

[profiles.local]
PREFECT_API_URL = "http://127.0.0.1:4200/api"

[profiles.cloud]
PREFECT_API_URL = "https://api.prefect.cloud/api/accounts/a1/workspaces/w1"
PREFECT_API_KEY = "pnu_secret_from_profile"
"""


@pytest.fixture(autouse=True)
def _working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .env, prefect.toml or pyproject.toml of the repository's checkout is read."""
    monkeypatch.chdir(tmp_path)


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


def test_each_value_records_where_it_came_from(home: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text("export PREFECT_API_KEY='pnu_from_dotenv' # team key\n")
    (work / "prefect.toml").write_text('[api]\nurl = "http://toml:4200/api"\nauth_string = "a:b"\n')
    conn = resolve_connection(env={"PREFECT_HOME": str(home)}, cwd=work)
    assert (conn.api_url, conn.source) == ("http://toml:4200/api", "prefect.toml")
    assert conn.api_key == "pnu_from_dotenv" and conn.source_of("PREFECT_API_KEY") == ".env"
    assert conn.source_of("PREFECT_API_AUTH_STRING") == "prefect.toml"
    assert conn.source_of("PREFECT_API_SSL_CERT_FILE") is None
    assert "pnu_from_dotenv" not in repr(conn)


def test_profile_comes_last_even_after_pyproject(home: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.prefect.api]\nkey = "from-pyproject"\n')
    conn = resolve_connection(env={"PREFECT_HOME": str(home)}, cwd=tmp_path)
    assert conn.source == "profile 'local'"
    assert (conn.api_key, conn.source_of("PREFECT_API_KEY")) == ("from-pyproject", "pyproject.toml")


def test_an_empty_url_hides_the_profile_and_says_where_it_is_empty(home: Path) -> None:
    Path(".env").write_text("PREFECT_API_URL=\n")
    with pytest.raises(ConfigurationError, match=r"PREFECT_API_URL is empty in \.env"):
        resolve_connection(env={"PREFECT_HOME": str(home)})


def test_invalid_toml_and_booleans_are_configuration_errors_naming_the_source(home: Path) -> None:
    Path("prefect.toml").write_text("[api\n")
    with pytest.raises(ConfigurationError, match=r"prefect\.toml: invalid TOML"):
        resolve_connection(env={"PREFECT_HOME": str(home)})
    Path("prefect.toml").write_text('[api]\ntls_insecure_skip_verify = "maybe"\n')
    with pytest.raises(ConfigurationError, match=r"'maybe' \(from prefect.toml\)"):
        resolve_connection(env={"PREFECT_HOME": str(home)})
    Path("prefect.toml").write_text("[api]\ntls_insecure_skip_verify = true\n")
    assert resolve_connection(env={"PREFECT_HOME": str(home)}).verify is False


def test_ssl_cert_file_defaults_to_the_standard_variable(home: Path) -> None:
    env = {"PREFECT_HOME": str(home), "SSL_CERT_FILE": "/etc/ca.pem"}
    assert resolve_connection(env=env).verify == "/etc/ca.pem"
    assert resolve_connection(env={**env, "PREFECT_API_SSL_CERT_FILE": "/x.pem"}).verify == "/x.pem"


def test_prefect_test_mode_ignores_profiles_as_prefect_does(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="no Prefect API configured"):
        resolve_connection(env={"PREFECT_HOME": str(home), "PREFECT_TESTING_TEST_MODE": "1"})


def test_profiles_path_from_prefect_toml_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "p.toml").write_text(PROFILES)
    Path("prefect.toml").write_text('profiles_path = "team/p.toml"\n')
    conn = resolve_connection(env={"PREFECT_HOME": str(tmp_path / "nowhere")})
    assert conn.source == "profile 'local'"
