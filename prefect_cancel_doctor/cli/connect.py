"""The Prefect connection of the flags: the API client, the UI's links, and Prefect's own settings
for the commands that serve flows with Prefect itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect_cancel_doctor.cli.output import fail

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.scan.engine import Options


def prefect_api(api_url: str | None, api_key: str | None, profile: str | None) -> PrefectApi:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.clients.settings import resolve_connection

    return PrefectApi(resolve_connection(api_url, api_key, profile))


def open_api(api_url: str | None, api_key: str | None, profile: str | None) -> PrefectApi:
    """The API every command opens: the `cli` package's `_api` (`prefect_api` unless a test put a
    fake Prefect there)."""
    from prefect_cancel_doctor import cli

    return cli._api(api_url, api_key, profile)


def with_ui(options: Options, api: PrefectApi, profile: str | None) -> Options:
    """`options` with the Prefect UI's base URL: PREFECT_UI_URL (environment, else the profile
    the connection came from), else derived from the API URL (`links.ui_base_url`)."""
    import dataclasses
    import os

    from prefect_cancel_doctor.clients.settings import read_profile
    from prefect_cancel_doctor.core.links import ui_base_url

    _, values = read_profile(os.environ, profile)
    return dataclasses.replace(options, ui_url=ui_base_url(api.url, os.environ, values))


def point_prefect_at(api_url: str | None, api_key: str | None, profile: str | None) -> None:
    """Export the doctor's connection for Prefect, which reads its settings when it is imported
    (`schedule` and `agent` serve flows with Prefect itself)."""
    import os

    from prefect_cancel_doctor.clients.settings import resolve_connection
    from prefect_cancel_doctor.errors import DoctorError

    try:
        connection = resolve_connection(api_url, api_key, profile)
    except DoctorError as exc:
        fail(exc)
    os.environ["PREFECT_API_URL"] = connection.api_url
    if connection.api_key:
        os.environ["PREFECT_API_KEY"] = connection.api_key
    if connection.auth_string:
        os.environ["PREFECT_API_AUTH_STRING"] = connection.auth_string
