"""A refusal's hint names the credential the refused request carried: by kind, never by value.

httpx sends a URL's `user:password` as basic auth, in place of the Authorization header the
doctor sets (the API key's Bearer, the auth string's Basic). GIVEN each combination of URL
userinfo, API key and auth string, WHEN the API answers 401, THEN the hint says what was sent,
what was configured but not sent, and shows no secret in any form.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.errors import ApiRefused

KEY = "pnu_keyvalue123"
AUTH = "admin:authpass456"
URL_PASSWORD = "urlpass789"
WITH_USERINFO = f"http://alice:{URL_PASSWORD}@prefect.test/api"
PLAIN = "http://prefect.test/api"


def refused(url: str, **credentials: str) -> tuple[ApiRefused, list[str]]:
    """The error of a 401, and the Authorization header the server saw."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(401, json={"detail": "Unauthorized"})

    sources = tuple((name, "environment") for name in ("PREFECT_API_URL", *_settings(credentials)))
    connection = Connection(url, source="environment", sources=sources, **credentials)
    with pytest.raises(ApiRefused) as info:
        PrefectApi(connection, transport=httpx.MockTransport(handler)).check()
    return info.value, seen


def _settings(credentials: dict[str, str]) -> list[str]:
    names = {"api_key": "PREFECT_API_KEY", "auth_string": "PREFECT_API_AUTH_STRING"}
    return [names[k] for k in credentials]


def no_secret(error: ApiRefused) -> None:
    text = f"{error} {error.hint}"
    for secret in (KEY, AUTH, URL_PASSWORD, "authpass456"):
        assert secret not in text
    for encoded in (AUTH, f"alice:{URL_PASSWORD}"):
        assert base64.b64encode(encoded.encode()).decode() not in text


def test_url_userinfo_alone_is_basic_auth_not_no_credentials() -> None:
    error, seen = refused(WITH_USERINFO)
    assert seen[0].startswith("Basic ")
    hint = error.hint or ""
    assert "no credentials were sent" not in hint
    assert "basic auth was sent with the user and password in the API URL (PREFECT_API_URL" in hint
    no_secret(error)


def test_url_userinfo_and_an_api_key_blames_the_url_not_the_key() -> None:
    error, seen = refused(WITH_USERINFO, api_key=KEY)
    assert seen[0].startswith("Basic "), "httpx sends the URL's userinfo in place of the Bearer key"
    hint = error.hint or ""
    assert "the API key (PREFECT_API_KEY, from environment) was not sent" in hint
    assert "was refused: check it" not in hint
    assert "Take it out of the URL" in hint
    no_secret(error)


def test_url_userinfo_and_an_auth_string_says_the_auth_string_was_not_sent() -> None:
    error, seen = refused(WITH_USERINFO, auth_string=AUTH)
    assert seen[0] == "Basic " + base64.b64encode(f"alice:{URL_PASSWORD}".encode()).decode()
    assert "the auth string (PREFECT_API_AUTH_STRING, from environment) was not sent" in (error.hint or "")
    no_secret(error)


def test_a_refused_key_is_the_key() -> None:
    error, seen = refused(PLAIN, api_key=KEY)
    assert seen[0].startswith("Bearer ")
    assert "the API key (PREFECT_API_KEY, from environment) was refused" in (error.hint or "")
    no_secret(error)


def test_a_refused_auth_string_is_the_auth_string() -> None:
    error, seen = refused(PLAIN, auth_string=AUTH)
    assert seen[0].startswith("Basic ")
    assert "the auth string (PREFECT_API_AUTH_STRING, from environment) was refused" in (error.hint or "")
    no_secret(error)


def test_nothing_sent_says_so() -> None:
    error, seen = refused(PLAIN)
    assert seen == [""]
    assert (error.hint or "").startswith("no credentials were sent")
