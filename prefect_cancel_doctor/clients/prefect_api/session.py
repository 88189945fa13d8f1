"""One Prefect API connection: credentials, retries, Prefect's CSRF handshake and paging."""

from __future__ import annotations

import base64
import collections
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.request import getproxies

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.clients._fields import as_str
from prefect_cancel_doctor.clients._http import BodyTooLarge, PooledClient, fetch, httpx, max_response_bytes
from prefect_cancel_doctor.clients._http import transport as bounded_transport
from prefect_cancel_doctor.clients.prefect_records import UnexpectedShape, parse_time
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.core import deadline
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.prefect_names import API_AUTH_STRING_SETTING, API_KEY_SETTING, API_URL_SETTING
from prefect_cancel_doctor.core.redact import hold, hold_url, hold_userinfo, redact_text, scrub
from prefect_cancel_doctor.errors import ApiRefused, ApiUnreachable

PAGE_SIZE = 200  # the server's default maximum page size (PREFECT_API_DEFAULT_LIMIT)
#: Answers worth one more try: a busy SQLite server answers 503 now and then; Cloud rate-limits (429).
_RETRY_STATUS = (429, 502, 503, 504)
#: Tries after the first, for every request.
RETRIES = 3
#: The longest wait before one retry, whatever `Retry-After` asks: the doctor runs during incidents.
MAX_RETRY_WAIT = 10.0
#: Methods a server with CSRF protection (PREFECT_SERVER_CSRF_PROTECTION_ENABLED) refuses
#: without a token (prefect/server/api/middleware.py: CsrfMiddleware).
_CSRF_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class PrefectSession(PooledClient):
    """The transport of `PrefectApi`: one request at a time, errors as `ApiUnreachable`/`ApiRefused`."""

    def __init__(
        self,
        connection: Connection,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 15.0,
    ) -> None:
        headers = {"User-Agent": f"prefect-cancel-doctor/{__version__}"}
        # What must never be printed, should a server echo it back: held by value (`redact.scrub`).
        hold(connection.api_key)
        hold_userinfo(*(connection.auth_string or ":").partition(":")[::2])
        hold_url(connection.api_url)
        if connection.api_key:
            headers["Authorization"] = f"Bearer {connection.api_key}"
        elif connection.auth_string:
            token = base64.b64encode(connection.auth_string.encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        #: The API URL as it may be printed (a password in it hidden).
        self.url = connection.display_url
        self._connection = connection
        #: Prefect's CSRF handshake (prefect/client/base.py): a client id of our own, and the
        #: server's token for it with its expiry, fetched only once a POST is refused for want
        #: of one, so a server without CSRF protection costs no extra request.
        self._csrf_client = str(uuid.uuid4())
        self._csrf: tuple[str, datetime | None] | None = None
        self._csrf_lock = threading.Lock()
        # Loading the CA bundle costs 15-60 ms, a large part of a scan's start-up: skip it
        # when no connection can use TLS (a plain http:// URL and no proxy configured).
        verify = connection.verify if _may_use_tls(connection.api_url) else False
        self._http = httpx.Client(
            base_url=connection.api_url + "/",
            headers=headers,
            timeout=timeout,
            verify=verify,
            transport=transport or bounded_transport(retries=2, verify=verify),
        )
        #: The largest answer read (`PCD_MAX_RESPONSE_MB`); a larger one is refused unread.
        self._limit = max_response_bytes()
        #: Requests sent so far (the health report states its cost); a scan sends some
        #: from several threads at once.
        self.requests = 0
        self._counting = threading.Lock()

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        missing: tuple[int, ...] = (),
        retries: int = RETRIES,
    ) -> Any:
        """One request; errors become `ApiUnreachable`/`ApiRefused`.

        `missing`: statuses that mean "no such thing" and answer None (e.g. 404 and 405 for an
        endpoint older servers or Cloud lack).
        `retries`: try again this many times on 429/502/503/504, after the server's
        `Retry-After` (at most `MAX_RETRY_WAIT` seconds) or an exponential backoff.
        A POST refused for want of a CSRF token is sent again once with a fresh token.
        """
        response = self._send(method, path, body, retries)
        if response.status_code == 403 and method in _CSRF_METHODS and _says_csrf(response):
            self._renew_csrf(stale=response.request.headers.get("Prefect-Csrf-Token"))
            response = self._send(method, path, body, retries)
        if response.status_code in missing:
            return None
        if response.status_code == 403 and _says_csrf(response):
            raise ApiRefused(
                f"the Prefect API at {self.url} refused {method} {path}: its CSRF protection "
                f"rejected the token ({self._clean(response.text[:200])})",
                hint="the server runs with PREFECT_SERVER_CSRF_PROTECTION_ENABLED; the token comes from "
                "GET /csrf-token and goes in the Prefect-Csrf-Token and Prefect-Csrf-Client headers: "
                "check that no proxy in between drops them",
            )
        if response.status_code in (401, 403):
            raise ApiRefused(
                f"Prefect API refused the request ({response.status_code} "
                f"{response.reason_phrase}) at {self.url}",
                hint=self._credentials_hint(response.request),
            )
        if response.status_code == 404 and path.endswith("/filter"):
            raise ApiRefused(
                f"{self.url} does not look like a Prefect API (404 on {path})",
                hint="a self-hosted API URL ends in /api, e.g. http://127.0.0.1:4200/api",
            )
        if response.status_code == 429:
            raise ApiRefused(
                f"Prefect API rate limit: 429 on {method} {path} after {retries + 1} tries",
                hint="wait a minute and run again; Prefect Cloud limits requests per workspace",
            )
        if response.status_code >= 400:
            raise ApiRefused(
                f"Prefect API error {response.status_code} {self._clean(response.reason_phrase)} "
                f"on {method} {path}: {self._clean(response.text[:200])}"
            )
        if response.status_code == 204:  # POST /events, PATCH /artifacts/{id}: no body
            return None
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiRefused(
                f"{self.url} answered {path} with something that is not JSON",
                hint="is this the API URL (ending in /api) and not the UI's?",
            ) from exc

    def _send(self, method: str, path: str, body: Any, retries: int) -> httpx.Response:
        """Send one request, again on 429/502/503/504, all within the request deadline
        (`deadline`); transport failures and a passed deadline become `ApiUnreachable`, an answer
        over the size cap `ApiRefused`."""
        with deadline.request():
            for attempt in range(retries + 1):
                with self._counting:
                    self.requests += 1
                try:
                    request = self._http.build_request(
                        method, path.lstrip("/"), json=body, headers=self._csrf_headers(method)
                    )
                    response = fetch(self._http, request, self._limit)
                except deadline.DeadlinePassed as exc:
                    raise ApiUnreachable(
                        f"the Prefect API at {self.url} did not answer {method} {_short(path)} "
                        f"within {exc.describe()}",
                        hint=f"the server accepts connections but answers slowly, or not at all: check its "
                        f"health (and any proxy in between); {exc.hint}",
                    ) from exc
                except BodyTooLarge as exc:
                    raise ApiRefused(
                        f"the Prefect API at {self.url} answered {method} {_short(path)} with more than "
                        f"{exc.limit / 2**20:g} MiB: refused, unread",
                        hint="is this the Prefect API (ending in /api)? Runs with very large parameters "
                        "make large pages: raise PCD_MAX_RESPONSE_MB",
                    ) from exc
                except httpx.TimeoutException as exc:
                    raise ApiUnreachable(
                        f"Prefect API at {self.url} timed out ({type(exc).__name__})"
                    ) from exc
                except httpx.TransportError as exc:
                    raise ApiUnreachable(
                        f"cannot reach the Prefect API at {self.url}: {self._clean(str(exc))}"
                    ) from exc
                if response.status_code not in _RETRY_STATUS or attempt == retries:
                    break
                wait = retry_wait(response, attempt)
                left = deadline.remaining()
                if left is not None and wait >= left:
                    break  # no time for another try: the refusal stands
                time.sleep(wait)
        return response

    def _csrf_headers(self, method: str) -> dict[str, str]:
        """The CSRF headers a change request carries once the server asked for them; renewed when expired."""
        if method not in _CSRF_METHODS or self._csrf is None:
            return {}
        with self._csrf_lock:
            assert self._csrf is not None
            token, expires = self._csrf
            if expires is not None and datetime.now(timezone.utc) >= expires:
                token = self._fetch_csrf_token()
        return {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": self._csrf_client}

    def _renew_csrf(self, stale: str | None) -> None:
        """Fetch a token after a refusal, unless another thread did since `stale` was sent."""
        with self._csrf_lock:
            if self._csrf is None or self._csrf[0] == stale:
                self._fetch_csrf_token()

    def _fetch_csrf_token(self) -> str:
        """`GET /csrf-token?client=...` (under `_csrf_lock`): the token and its expiry."""
        path = f"/csrf-token?client={self._csrf_client}"
        response = self._send("GET", path, None, RETRIES)
        try:
            answer = response.json() if response.status_code == 200 else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            answer = None
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiRefused(
                f"the Prefect API at {self.url} asks for a CSRF token, but GET /csrf-token answered "
                f"{response.status_code}: {self._clean(response.text[:200])}",
                hint="the server runs with PREFECT_SERVER_CSRF_PROTECTION_ENABLED; is something "
                "in between (a proxy) answering for it?",
            )
        assert isinstance(answer, dict)
        expiration = answer.get("expiration")
        self._csrf = (token, parse_time(as_str(expiration)))
        return token

    def _credentials_hint(self, request: httpx.Request) -> str:
        """What to check when the API refuses us: the credential the refused request carried (by
        kind, never its value), where it was set, and any configured one that was not sent."""
        connection = self._connection

        def origin(setting: str) -> str:
            source = connection.source_of(setting)
            return f"{setting}, from {source}" if source else setting

        sent = _sent_credential(request, connection.auth_string)
        if sent == "api key":
            return (
                f"the API key ({origin(API_KEY_SETTING)}) was refused: check it; "
                "a Cloud key needs read access to the workspace"
            )
        if sent == "auth string":
            return (
                f"the auth string ({origin(API_AUTH_STRING_SETTING)}) was refused: it must match "
                "the server's PREFECT_SERVER_API_AUTH_STRING"
            )
        if sent == "url userinfo":
            unsent = [
                f"the API key ({origin(API_KEY_SETTING)})" if connection.api_key else "",
                f"the auth string ({origin(API_AUTH_STRING_SETTING)})" if connection.auth_string else "",
            ]
            unsent = [u for u in unsent if u]
            hint = (
                "basic auth was sent with the user and password in the API URL "
                f"({origin(API_URL_SETTING)}), and refused"
            )
            if unsent:
                return (
                    f"{hint}; {' and '.join(unsent)} {'were' if len(unsent) > 1 else 'was'} not sent: a "
                    "user:password in the URL takes the Authorization header in its place (httpx sends "
                    "it as basic auth). Take it out of the URL"
                )
            return f"{hint}: they must match the server's PREFECT_SERVER_API_AUTH_STRING (user:password)"
        if sent == "other":
            return "the Authorization header sent was refused: check the credentials configured"
        return (
            "no credentials were sent: set PREFECT_API_KEY (Prefect Cloud) or "
            "PREFECT_API_AUTH_STRING (a self-hosted server with basic auth)"
        )

    def _clean(self, text: str) -> str:
        """Text a server sent back, safe to print: no credentials of ours (by value, in any form,
        also where `text` was cut in one), no secret by its form, no control characters."""
        return visible(redact_text(scrub(text, cut=True)), 300)

    def _paged(
        self, path: str, body: dict[str, Any], sort: str = "ID_DESC", *, id_key: str = "id"
    ) -> Iterator[object]:
        """Every item of a `/filter` endpoint, page by page, in a stable order (parsed by the caller)."""
        seen = set()
        for page in self._pages(path, body, sort):
            for item in page:
                # Runs that change state while we page can shift between pages.
                key = item.get(id_key) if isinstance(item, dict) else None
                if key is None or key not in seen:
                    seen.add(key)
                    yield item

    def _pages(
        self, path: str, body: dict[str, Any], sort: str, *, in_flight: int = 1
    ) -> Iterator[list[object]]:
        """The pages of a `/filter` endpoint, as the server answers them, in order.

        `in_flight` > 1: once the first page comes back full, the next pages are asked for that
        many at a time (at most `in_flight - 1` asked for past the last one, and dropped). A long
        listing then waits on the server's serialising and the round trips side by side instead
        of one after the other.
        """

        def read(offset: int) -> list[object]:
            page = self._request("POST", path, {**body, "limit": PAGE_SIZE, "offset": offset, "sort": sort})
            if not isinstance(page, list):
                raise UnexpectedShape(
                    f"the Prefect API answered {path} with {type(page).__name__}, not a list"
                )
            return page

        page = read(0)
        yield page
        if len(page) < PAGE_SIZE:
            return
        if in_flight <= 1:
            offset = PAGE_SIZE
            while len(page) == PAGE_SIZE:
                page = read(offset)
                yield page
                offset += PAGE_SIZE
            return
        yield from _read_ahead(read, in_flight)


def _read_ahead(read: Callable[[int], list[object]], in_flight: int) -> Iterator[list[object]]:
    """The pages after the first, `in_flight` asked for at a time, in order, up to the first short one."""
    pool = ThreadPoolExecutor(in_flight, thread_name_prefix="pcd-page")
    asked = itertools.count(PAGE_SIZE, PAGE_SIZE)
    waiting = collections.deque(pool.submit(read, next(asked)) for _ in range(in_flight))
    finished = False
    try:
        while True:
            page = waiting.popleft().result()
            yield page
            if len(page) < PAGE_SIZE:
                finished = True
                return
            waiting.append(pool.submit(read, next(asked)))
    finally:
        # Done: the pages asked for past the last one are short, let them land. Stopped (an error,
        # Ctrl-C, the caller gone): nothing more is sent, what is under way ends within its deadline.
        pool.shutdown(wait=finished, cancel_futures=True)


def _sent_credential(request: httpx.Request, auth_string: str | None) -> str:
    """Which credential a request carried: "api key" (Bearer), "auth string" (Basic, ours),
    "url userinfo" (Basic from the URL's user:password, which httpx sends in place of our
    header), "other", or "none"."""
    header = request.headers.get("authorization")
    if not header:
        return "none"
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return "api key"
    if scheme.lower() != "basic":
        return "other"
    if auth_string and value.strip() == base64.b64encode(auth_string.encode()).decode():
        return "auth string"
    return "url userinfo" if request.url.userinfo else "other"


def _short(path: str) -> str:
    """A request path as an error names it: without its query (a page token can be long)."""
    return visible(path.split("?", 1)[0], 200)


def _says_csrf(response: httpx.Response) -> bool:
    """A 403 from Prefect's CSRF middleware ("Missing CSRF token.", "Invalid CSRF token or client ...")."""
    text = response.text.lower()
    return "csrf" in text or "client identifier" in text


def retry_wait(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before retrying: the server's `Retry-After` (seconds), else a backoff."""
    asked = response.headers.get("retry-after", "")
    try:
        wait = float(asked)
    except ValueError:
        wait = 0.25 * 2**attempt
    return min(max(wait, 0.0), MAX_RETRY_WAIT)


def _may_use_tls(url: str) -> bool:
    """Whether a client of `url` may open a TLS connection: an https URL, or any proxy configured."""
    return not url.lower().startswith("http://") or bool(getproxies())
