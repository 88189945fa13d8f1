"""The Prefect REST API, as far as the doctor needs it (read-only).

Works against a self-hosted server (optional basic auth string) and Prefect
Cloud workspace URLs (bearer key). The transport is injectable so tests can
replay faults with `httpx.MockTransport`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote
from urllib.request import getproxies

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.clients._fields import as_str
from prefect_cancel_doctor.clients._http import BodyTooLarge, fetch, httpx, max_response_bytes
from prefect_cancel_doctor.clients._http import transport as bounded_transport
from prefect_cancel_doctor.clients.prefect_records import (
    ArtifactRef,
    Deployment,
    Event,
    FlowRun,
    LogLine,
    PoolConcurrency,
    ServerSettings,
    State,
    TaskRun,
    UnexpectedShape,
    Worker,
    WorkPool,
    parse_artifact,
    parse_deployment,
    parse_event_page,
    parse_flow_run,
    parse_logs,
    parse_names,
    parse_pool_concurrency,
    parse_server_settings,
    parse_state,
    parse_states,
    parse_task_run,
    parse_time,
    parse_work_pool,
    parse_workers,
)
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.core import deadline
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.prefect_names import API_AUTH_STRING_SETTING, API_KEY_SETTING, API_URL_SETTING
from prefect_cancel_doctor.core.redact import hold, hold_url, hold_userinfo, redact_text, scrub
from prefect_cancel_doctor.errors import ApiRefused, ApiUnreachable, TargetError
from prefect_cancel_doctor.model import FlowRunRef, StateType, WorkerInfo, WorkerStatus

#: Log lines read per run for its timeline (the newest ones).
LOG_LINES = 200
PAGE_SIZE = 200  # the server's default maximum page size (PREFECT_API_DEFAULT_LIMIT)
#: The server's maximum page of `POST /events/filter` (`INTERACTIVE_PAGE_SIZE`).
EVENTS_PAGE_SIZE = 50
#: Flow runs named in one events query by resource id. The server puts the whole
#: filter into its page token, and the token into a URL: keep it well under the
#: 16 KiB an HTTP request line may take.
EVENTS_IDS_PER_QUERY = 50
#: Answers worth one more try: a busy SQLite server answers 503 now and then; Cloud rate-limits (429).
_RETRY_STATUS = (429, 502, 503, 504)
#: Statuses of an endpoint that older servers or Prefect Cloud do not have.
_NO_ENDPOINT = (404, 405)
#: Tries after the first, for every request.
RETRIES = 3
#: The longest wait before one retry, whatever `Retry-After` asks: the doctor runs during incidents.
MAX_RETRY_WAIT = 10.0
_CANCELLING = {"state": {"type": {"any_": [StateType.CANCELLING]}}}
#: Methods a server with CSRF protection (PREFECT_SERVER_CSRF_PROTECTION_ENABLED) refuses
#: without a token (prefect/server/api/middleware.py: CsrfMiddleware).
_CSRF_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class EventsUnavailable(ApiRefused):
    """The server has no events API (`POST /events/filter` answers 404)."""


class PrefectApi:
    """A small synchronous client over the endpoints the doctor reads."""

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
        self._client = httpx.Client(
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

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> PrefectApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------

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
                    request = self._client.build_request(
                        method, path.lstrip("/"), json=body, headers=self._csrf_headers(method)
                    )
                    response = fetch(self._client, request, self._limit)
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
                wait = _retry_wait(response, attempt)
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
        offset, seen = 0, set()
        while True:
            page = self._request("POST", path, {**body, "limit": PAGE_SIZE, "offset": offset, "sort": sort})
            if not isinstance(page, list):
                raise UnexpectedShape(
                    f"the Prefect API answered {path} with {type(page).__name__}, not a list"
                )
            for item in page:
                # Runs that change state while we page can shift between pages.
                key = item.get(id_key) if isinstance(item, dict) else None
                if key is None or key not in seen:
                    seen.add(key)
                    yield item
            if len(page) < PAGE_SIZE:
                return
            offset += PAGE_SIZE

    # -- reads ---------------------------------------------------------------

    def check(self) -> None:
        """Fail fast with a clear error when the API is unreachable or refuses."""
        self._request("POST", "/flow_runs/filter", {"limit": 1})

    def cancelling_runs(self) -> list[FlowRun]:
        """All flow runs whose state type is CANCELLING (server-side filter)."""
        return self._runs({"flow_runs": _CANCELLING})

    def cancelling_names(self, kind: str) -> dict[str, str]:
        """Names of the flows or deployments (`kind`) that have runs in CANCELLING, by id.

        Needs no run ids, so it can be asked at the same time as `cancelling_runs`.
        """
        return self._names(kind, {"flow_runs": _CANCELLING})

    def runs_ended_since(self, since: datetime, state_types: Iterable[str]) -> list[FlowRun]:
        """Flow runs in one of `state_types` whose end time is after `since`."""
        body = {
            "flow_runs": {
                "state": {"type": {"any_": list(state_types)}},
                "end_time": {"after_": since.astimezone(timezone.utc).isoformat()},
            }
        }
        return self._runs(body)

    def runs_by_id(self, ids: Iterable[str]) -> list[FlowRun]:
        """The flow runs with these ids (missing ids are simply absent).

        An id that is no UUID names no run (a process's PREFECT__FLOW_RUN_ID can say
        anything): it is left out, where the server would refuse the whole request (422).
        """
        wanted = sorted(i for i in set(ids) if _is_uuid(i))
        runs: list[FlowRun] = []
        for start in range(0, len(wanted), PAGE_SIZE):
            runs.extend(self._runs({"flow_runs": {"id": {"any_": wanted[start : start + PAGE_SIZE]}}}))
        return runs

    def flow_run(self, run_id: str) -> FlowRun:
        """One flow run by id; `TargetError` (exit 2) when the server has none."""
        # 422: the id is not a UUID.
        raw = self._request("GET", f"/flow_runs/{quote(run_id, safe='')}", missing=(404, 422))
        if raw is None:
            raise TargetError(
                f"no flow run {visible(run_id, 100)} on {self.url}",
                hint="list the runs stuck in Cancelling with `prefect-cancel-doctor scan`",
            )
        return parse_flow_run(raw)

    def state_history(self, run_id: str) -> list[State]:
        """Every state the run has been in, oldest first."""
        return parse_states(self._request("GET", f"/flow_run_states/?flow_run_id={quote(run_id, safe='')}"))

    def names(self, kind: str, ids: Iterable[str | None]) -> dict[str, str]:
        """Names of flows or deployments (`kind` = "flows" | "deployments") by id."""
        wanted = sorted({i for i in ids if i})
        names: dict[str, str] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            names.update(self._names(kind, {kind: {"id": {"any_": wanted[start : start + PAGE_SIZE]}}}))
        return names

    def _names(self, kind: str, body: dict[str, Any]) -> dict[str, str]:
        return parse_names(list(self._paged(f"/{kind}/filter", body, sort="NAME_ASC")), f"a {kind} listing")

    def _runs(self, body: dict[str, Any]) -> list[FlowRun]:
        return [parse_flow_run(r) for r in self._paged("/flow_runs/filter", body)]

    def pool_workers(self, pool: str) -> list[Worker]:
        """The workers registered in a work pool, with status and heartbeat."""
        path = f"/work_pools/{quote(pool, safe='')}/workers/filter"
        return parse_workers(self._request("POST", path, {"limit": PAGE_SIZE}))

    def flow_run_logs(self, run_id: str, limit: int = LOG_LINES) -> list[LogLine]:
        """The newest `limit` log lines of a run, oldest first."""
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_DESC", "limit": limit}
        return parse_logs(self._request("POST", "/logs/filter", body))[::-1]

    # -- reads for the health report ---------------------------------------------

    def events(
        self, event_filter: dict[str, Any], on_total: Callable[[int], None] | None = None
    ) -> Generator[Event, None, None]:
        """Every event matching `event_filter` (`POST /events/filter`, then its next pages).

        The server's `next_page` is an absolute URL built from the URL it was
        reached at, with a token that is not URL-encoded; only the token is
        taken from it, and sent, encoded, to this client's own base URL.
        `on_total` is told how many events match, before the first is yielded.
        """
        body = {"filter": event_filter, "limit": EVENTS_PAGE_SIZE}
        raw = self._request("POST", "/events/filter", body, missing=_NO_ENDPOINT)
        if raw is None:
            raise EventsUnavailable(
                f"{self.url} has no events API (404 on /events/filter)",
                hint="Prefect 3 servers and Prefect Cloud have one; older servers are read run by run",
            )
        page = parse_event_page(raw)
        if on_total is not None:
            on_total(page.total)
        seen: set[str] = set()
        while True:
            for event in page.events:
                if event.id not in seen:
                    seen.add(event.id)
                    yield event
            token = _page_token(page.next_page)
            if token is None:
                return
            path = f"/events/filter/next?page-token={quote(token, safe='')}"
            page = parse_event_page(self._request("GET", path))

    def server_settings(self) -> ServerSettings | None:
        """The server's settings (`GET /admin/settings`); None where it has none (Prefect Cloud)."""
        try:
            settings = self._request("GET", "/admin/settings", missing=_NO_ENDPOINT)
        except ApiRefused:
            return None
        return parse_server_settings(settings)

    def runs_by_filter(self, flow_runs: dict[str, Any]) -> list[FlowRun]:
        """Flow runs matching a `flow_runs` filter body (paged)."""
        return self._runs({"flow_runs": flow_runs})

    def child_runs(self, parent_ids: Iterable[str], state_types: Iterable[str]) -> list[FlowRun]:
        """Deployment runs started by these flow runs (`run_deployment`), in one of `state_types`."""
        wanted = sorted(set(parent_ids))
        children: list[FlowRun] = []
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {
                "parent_flow_run_id": {"any_": wanted[start : start + PAGE_SIZE]},
                "deployment_id": {"is_null_": False},
                "state": {"type": {"any_": list(state_types)}},
            }
            children.extend(self.runs_by_filter(body))
        return children

    def count_runs(self, flow_runs: dict[str, Any]) -> int:
        """How many flow runs match a `flow_runs` filter body."""
        count = self._request("POST", "/flow_runs/count", {"flow_runs": flow_runs})
        if isinstance(count, bool) or not isinstance(count, int):
            raise UnexpectedShape("the Prefect API answered a run count with something that is not a number")
        return count

    def task_runs_by_id(self, ids: Iterable[str]) -> list[TaskRun]:
        """The task runs with these ids."""
        wanted = sorted(set(ids))
        runs: list[TaskRun] = []
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {"task_runs": {"id": {"any_": wanted[start : start + PAGE_SIZE]}}}
            runs.extend(parse_task_run(t) for t in self._paged("/task_runs/filter", body))
        return runs

    def deployments_by_id(self, ids: Iterable[str | None]) -> list[Deployment]:
        """The deployments with these ids (with their concurrency limits)."""
        wanted = sorted({i for i in ids if i})
        found: list[Deployment] = []
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {"deployments": {"id": {"any_": wanted[start : start + PAGE_SIZE]}}}
            found.extend(parse_deployment(d) for d in self._paged("/deployments/filter", body, "NAME_ASC"))
        return found

    def work_pools(self, names: Iterable[str]) -> dict[str, WorkPool]:
        """The work pools with these names, by name (missing names are simply absent)."""
        wanted = sorted(set(names))
        found: dict[str, WorkPool] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {"work_pools": {"name": {"any_": wanted[start : start + PAGE_SIZE]}}}
            for raw in self._paged("/work_pools/filter", body, "NAME_ASC", id_key="name"):
                pool = parse_work_pool(raw)
                if pool is not None:
                    found[pool.name] = pool
        return found

    def pool_concurrency_status(self, name: str) -> PoolConcurrency | None:
        """Which runs the server counts against a pool's and its queues' limits.

        `POST /work_pools/{name}/concurrency_status` (recent servers): per queue,
        `concurrency_limit`, `active_slots` and up to 200 slot-holding `flow_runs`.
        None where the server has no such endpoint.
        """
        status = self._request(
            "POST",
            f"/work_pools/{quote(name, safe='')}/concurrency_status",
            {"limit": PAGE_SIZE, "flow_run_limit": PAGE_SIZE},
            missing=_NO_ENDPOINT,
        )
        return parse_pool_concurrency(status)

    def runs_named(self, name: str) -> list[FlowRun]:
        """The flow runs with exactly this name (run names are not unique: there may be several)."""
        return self._runs({"flow_runs": {"name": {"any_": [name]}}})

    # -- publishing verdicts (`scan --publish`, `agent`: publish.py); the only writes ----------

    def post_events(self, events: list[dict[str, Any]]) -> None:
        """Send a batch of events in one request (`POST /events`: 204, self-hosted and Cloud)."""
        self._request("POST", "/events", events)

    def latest_artifacts(self, keys: Iterable[str]) -> dict[str, ArtifactRef]:
        """The latest artifact of each of these keys, by key (`POST /artifacts/latest/filter`)."""
        wanted = sorted(set(keys))
        found: dict[str, ArtifactRef] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {"artifacts": {"key": {"any_": wanted[start : start + PAGE_SIZE]}}}
            for raw in self._paged("/artifacts/latest/filter", body, "ID_DESC", id_key="key"):
                artifact = parse_artifact(raw)
                if artifact is not None:
                    found[artifact.key] = artifact
        return found

    def create_artifact(self, body: dict[str, Any]) -> ArtifactRef | None:
        """Create an artifact (`POST /artifacts/`); the record the server made."""
        return parse_artifact(self._request("POST", "/artifacts/", body))

    def update_artifact(self, artifact_id: str, body: dict[str, Any]) -> None:
        """Replace an artifact's data and description (`PATCH /artifacts/{id}`)."""
        self._request("PATCH", f"/artifacts/{quote(artifact_id, safe='')}", body)

    def work_pool_ids(self, names: Iterable[str]) -> dict[str, str]:
        """The ids of the work pools with these names, by name (missing names are simply absent)."""
        wanted = sorted(set(names))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {"work_pools": {"name": {"any_": wanted[start : start + PAGE_SIZE]}}}
            raw_pools = list(self._paged("/work_pools/filter", body, "NAME_ASC", id_key="name"))
            names = parse_names(raw_pools, "a work pool listing")
            found.update({name: pool_id for pool_id, name in names.items()})
        return found

    def force_cancelled(self, run_id: str, message: str) -> State | None:
        """Set the run's state to Cancelled, forced past the orchestration rules (`resolve` only:
        every other command is read-only). Returns the state the server holds afterwards."""
        state = {"type": StateType.CANCELLED.value, "name": "Cancelled", "message": message}
        answer = self._request("POST", f"/flow_runs/{run_id}/set_state", {"state": state, "force": True})
        return parse_state(answer.get("state") if isinstance(answer, dict) else None)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


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


def _retry_wait(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before retrying: the server's `Retry-After` (seconds), else a backoff."""
    asked = response.headers.get("retry-after", "")
    try:
        wait = float(asked)
    except ValueError:
        wait = 0.25 * 2**attempt
    return min(max(wait, 0.0), MAX_RETRY_WAIT)


def _page_token(next_page: str | None) -> str | None:
    """The raw `page-token` of a `next_page` link (taken as it is: the server does not encode it)."""
    if not next_page or "page-token=" not in next_page:
        return None
    token = next_page.split("page-token=", 1)[1].split("&", 1)[0]
    return token or None


def _may_use_tls(url: str) -> bool:
    """Whether a client of `url` may open a TLS connection: an https URL, or any proxy configured."""
    return not url.lower().startswith("http://") or bool(getproxies())


def cancelling_since(run: FlowRun, history: list[State] | None) -> str | None:
    """When the run last entered CANCELLING: the first of the latest unbroken CANCELLING states."""
    if history:
        since = None
        for state in history:
            if state.type is StateType.CANCELLING:
                since = since or state.timestamp
            elif since and state.type is not StateType.CANCELLED:
                since = None
        return since
    current = run.state
    return current.timestamp if current and current.type is StateType.CANCELLING else None


def to_flow_run_ref(
    run: FlowRun,
    flow_names: dict[str, str],
    deployment_names: dict[str, str],
    history: list[State] | None = None,
    workers: list[Worker] | None = None,
    now: datetime | None = None,
) -> FlowRunRef:
    """Build the report's view of a run from the API's records."""
    now = now or datetime.now(timezone.utc)
    state = run.state
    since = cancelling_since(run, history)
    since_dt = parse_time(since)
    return FlowRunRef(
        id=run.id,
        name=run.name,
        flow_name=flow_names.get(run.flow_id or ""),
        deployment_name=deployment_names.get(run.deployment_id or ""),
        work_pool_name=run.work_pool_name,
        state_type=run.state_type,
        state_name=state.name if state else "",
        state_message=state.message if state else None,
        start_time=run.start_time,
        infrastructure_pid=run.infrastructure_pid,
        labels=dict(run.labels),
        cancelling_for_seconds=(now - since_dt).total_seconds() if since_dt else None,
        cancelling_since=since,
        parent_task_run_id=run.parent_task_run_id,
        workers=tuple(_worker_info(w, now) for w in workers or ()),
    )


def _worker_info(worker: Worker, now: datetime) -> WorkerInfo:
    beat = parse_time(worker.last_heartbeat_time)
    return WorkerInfo(
        name=worker.name,
        status=WorkerStatus.parse(worker.status),
        last_heartbeat_time=worker.last_heartbeat_time,
        seconds_since_heartbeat=(now - beat).total_seconds() if beat else None,
        heartbeat_interval_seconds=worker.heartbeat_interval_seconds,
    )
