"""Prefect's CSRF handshake, replayed with MockTransport (the real server: test_csrf_server.py).

A server started with PREFECT_SERVER_CSRF_PROTECTION_ENABLED answers 403 to a POST
without a token; the client asks `GET /csrf-token?client=<id>` and sends the
`Prefect-Csrf-Token` and `Prefect-Csrf-Client` headers (prefect/client/base.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.errors import ApiRefused

FUTURE = "2999-01-01T00:00:00Z"


class CsrfServer:
    """Prefect's CsrfMiddleware and /csrf-token endpoint, in miniature."""

    def __init__(self, *, enabled: bool = True, expirations: tuple[str, ...] = (FUTURE,)) -> None:
        self.enabled = enabled
        self.expirations = list(expirations)
        self.tokens: dict[str, str] = {}  # client -> token
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.seen.append(f"{request.method} {request.url.path}")
            if request.url.path == "/api/csrf-token":
                if not self.enabled:
                    return httpx.Response(422, json={"detail": "CSRF protection is disabled."})
                client = request.url.params["client"]
                token = f"token-{len(self.seen)}"
                self.tokens[client] = token
                expiration = self.expirations.pop(0) if len(self.expirations) > 1 else self.expirations[0]
                return httpx.Response(200, json={"token": token, "client": client, "expiration": expiration})
            if self.enabled and request.method == "POST":
                token = request.headers.get("Prefect-Csrf-Token")
                if token is None:
                    return httpx.Response(403, json={"detail": "Missing CSRF token."})
                if self.tokens.get(request.headers.get("Prefect-Csrf-Client", "")) != token:
                    return httpx.Response(403, json={"detail": "Invalid CSRF token or client identifier."})
            return httpx.Response(200, json=[])


def client(handler: Callable[[httpx.Request], httpx.Response], **conn: object) -> PrefectApi:
    return PrefectApi(
        Connection("http://prefect.test/api", **conn),  # type: ignore[arg-type]
        transport=httpx.MockTransport(handler),
    )


def test_a_refused_post_fetches_a_token_once_and_later_posts_carry_it() -> None:
    server = CsrfServer()
    api = client(server.handle)
    assert api.cancelling_runs() == []
    assert api.cancelling_runs() == []
    assert server.seen == [
        "POST /api/flow_runs/filter",  # 403: Missing CSRF token.
        "GET /api/csrf-token",
        "POST /api/flow_runs/filter",
        "POST /api/flow_runs/filter",  # with the token at once
    ]
    assert api.requests == 4


def test_a_server_without_csrf_costs_no_extra_request() -> None:
    server = CsrfServer(enabled=False)
    api = client(server.handle)
    for _ in range(3):
        api.cancelling_runs()
    assert server.seen == ["POST /api/flow_runs/filter"] * 3


def test_an_expired_token_is_renewed_before_the_post() -> None:
    soon = (datetime.now(timezone.utc) + timedelta(seconds=0.3)).isoformat()
    server = CsrfServer(expirations=(soon, FUTURE))
    api = client(server.handle)
    api.cancelling_runs()
    time.sleep(0.4)
    api.cancelling_runs()
    assert server.seen[3:] == ["GET /api/csrf-token", "POST /api/flow_runs/filter"]


def test_a_token_the_server_forgot_is_replaced_once() -> None:
    server = CsrfServer()
    api = client(server.handle)
    api.cancelling_runs()
    server.tokens.clear()  # e.g. a server restarted on a fresh database
    api.cancelling_runs()
    assert server.seen[3:] == [
        "POST /api/flow_runs/filter",
        "GET /api/csrf-token",
        "POST /api/flow_runs/filter",
    ]


def test_threads_refused_together_share_one_token() -> None:
    server = CsrfServer()
    api = client(server.handle)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: api.cancelling_runs(), range(16)))
    assert server.seen.count("GET /api/csrf-token") == 1


def test_a_csrf_refusal_that_persists_says_csrf_not_api_key() -> None:
    # GIVEN a proxy that drops the CSRF headers
    server = CsrfServer()

    def strip_headers(request: httpx.Request) -> httpx.Response:
        del request.headers["Prefect-Csrf-Token"]
        return server.handle(request)

    def handler(request: httpx.Request) -> httpx.Response:
        return strip_headers(request) if "Prefect-Csrf-Token" in request.headers else server.handle(request)

    with pytest.raises(ApiRefused) as info:
        client(handler, api_key="pnu_topsecret").cancelling_runs()
    assert "CSRF" in str(info.value) and "Missing CSRF token" in str(info.value)
    assert "PREFECT_API_KEY" not in (info.value.hint or "")
    assert info.value.exit_code == 3


def test_csrf_endpoint_that_fails_is_a_clear_refusal() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/csrf-token":
            return httpx.Response(404, text="not here")
        return httpx.Response(403, json={"detail": "Missing CSRF token."})

    with pytest.raises(ApiRefused, match=r"asks for a CSRF token, but GET /csrf-token answered 404"):
        client(handler).cancelling_runs()


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        ({"api_key": "pnu_x", "sources": (("PREFECT_API_KEY", ".env"),)}, "PREFECT_API_KEY, from .env"),
        (
            {"auth_string": "a:b", "sources": (("PREFECT_API_AUTH_STRING", "prefect.toml"),)},
            "PREFECT_API_AUTH_STRING, from prefect.toml",
        ),
        ({}, "no credentials were sent"),
    ],
)
def test_an_auth_refusal_names_the_credential_and_where_it_was_set(
    conn: dict[str, object], expected: str
) -> None:
    with pytest.raises(ApiRefused) as info:
        client(lambda r: httpx.Response(403, json={"detail": "Forbidden"}), **conn).cancelling_runs()
    assert expected in (info.value.hint or "")
    assert "CSRF" not in str(info.value)
