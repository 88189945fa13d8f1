"""Links into the Prefect UI: as Prefect builds them, never from a hostile id, never with credentials."""

from __future__ import annotations

import pytest

from prefect_cancel_doctor.core.links import flow_run_url, ui_base_url

RUN = "06e664e5-5fa7-4eba-bb99-2dfc47082c1c"
ACCOUNT = "9b6ecf7a-0000-4000-8000-00000000000a"
WORKSPACE = "4c1b2fd1-0000-4000-8000-00000000000b"
CLOUD_API = f"https://api.prefect.cloud/api/accounts/{ACCOUNT}/workspaces/{WORKSPACE}"


def link(api_url: str | None, env: dict[str, str] | None = None, **profile: str) -> str | None:
    return flow_run_url(ui_base_url(api_url, env or {}, profile), RUN)


def test_self_hosted_is_the_api_url_without_api() -> None:
    assert link("http://127.0.0.1:4200/api") == f"http://127.0.0.1:4200/runs/flow-run/{RUN}"
    assert link("https://prefect.example.com/api/") == f"https://prefect.example.com/runs/flow-run/{RUN}"
    assert link("http://proxy.internal/prefect/api") == f"http://proxy.internal/prefect/runs/flow-run/{RUN}"


def test_cloud_is_the_app_with_account_and_workspace() -> None:
    assert link(CLOUD_API) == (
        f"https://app.prefect.cloud/account/{ACCOUNT}/workspace/{WORKSPACE}/runs/flow-run/{RUN}"
    )


def test_prefect_ui_url_overrides_from_the_environment_then_the_profile() -> None:
    custom = {"PREFECT_UI_URL": "https://ui.example.com/prefect/"}
    assert link("http://127.0.0.1:4200/api", custom) == f"https://ui.example.com/prefect/runs/flow-run/{RUN}"
    assert link("http://127.0.0.1:4200/api", PREFECT_UI_URL="https://from-profile.example.com") == (
        f"https://from-profile.example.com/runs/flow-run/{RUN}"
    )
    assert link("http://127.0.0.1:4200/api", custom, PREFECT_UI_URL="https://from-profile.example.com") == (
        f"https://ui.example.com/prefect/runs/flow-run/{RUN}"
    )


def test_a_custom_cloud_api_url_maps_to_its_app() -> None:
    env = {"PREFECT_CLOUD_API_URL": "https://api.stg.prefect.dev/api"}
    api = f"https://api.stg.prefect.dev/api/accounts/{ACCOUNT}/workspaces/{WORKSPACE}"
    assert link(api, env) == (
        f"https://app.stg.prefect.dev/account/{ACCOUNT}/workspace/{WORKSPACE}/runs/flow-run/{RUN}"
    )


def test_credentials_never_reach_the_link() -> None:
    assert link("http://admin:hunter2@127.0.0.1:4200/api") == f"http://127.0.0.1:4200/runs/flow-run/{RUN}"
    assert link("http://admin:***@127.0.0.1:4200/api") == f"http://127.0.0.1:4200/runs/flow-run/{RUN}"


@pytest.mark.parametrize(
    "run_id",
    [
        "",
        "crafty-lemur",
        "../../admin",
        RUN + ")](http://evil)",
        RUN + "\x1b]8;;http://evil\x07",
        "06e664e5-5fa7-4eba-bb99-2dfc47082c1c/../x",
    ],
)
def test_no_link_for_an_id_that_is_not_a_uuid(run_id: str) -> None:
    assert flow_run_url("http://127.0.0.1:4200", run_id) is None


@pytest.mark.parametrize(
    "ui", ["javascript:alert(1)", "http://host/a b", "http://host/<x>", "http://host/(x)", "ftp://host", ""]
)
def test_no_link_from_a_base_url_that_could_break_out(ui: str) -> None:
    assert link("http://127.0.0.1:4200/api", {"PREFECT_UI_URL": ui} if ui else None) == (
        None if ui else f"http://127.0.0.1:4200/runs/flow-run/{RUN}"
    )


def test_no_api_url_and_no_ui_url_is_no_link() -> None:
    assert ui_base_url(None, {}) is None
    assert flow_run_url(None, RUN) is None


@pytest.mark.parametrize(
    "api_url",
    ["http://127.0.0.1:4200/api", "https://prefect.example.com/base/api", CLOUD_API],
)
def test_the_same_url_as_prefects_own_url_for(api_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's `url_for(..., url_type="ui")` with its settings derived from the same API URL."""
    pytest.importorskip("prefect", reason="compares with Prefect's own implementation")
    for key in ("PREFECT_UI_URL", "PREFECT_CLOUD_API_URL", "PREFECT_CLOUD_UI_URL"):
        monkeypatch.delenv(key, raising=False)
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.urls import url_for

    with temporary_settings({PREFECT_API_URL: api_url}):
        theirs = url_for("flow-run", obj_id=RUN, url_type="ui")
    assert link(api_url) == theirs
