"""`PrefectApi`: the endpoints the doctor reads (and the few it writes), answered with records."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import quote

from prefect_cancel_doctor.clients._fields import as_mapping, as_str, as_text, as_truncated_int
from prefect_cancel_doctor.clients.prefect_api.session import PAGE_SIZE, PrefectSession
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
    parse_work_pool,
    parse_workers,
)
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.errors import ApiRefused, TargetError
from prefect_cancel_doctor.model import StateType

_Record = TypeVar("_Record")

#: Log lines read per run for its timeline (the newest ones).
LOG_LINES = 200
#: The server's maximum page of `POST /events/filter` (`INTERACTIVE_PAGE_SIZE`).
EVENTS_PAGE_SIZE = 50
#: Flow runs named in one events query by resource id. The server puts the whole
#: filter into its page token, and the token into a URL: keep it well under the
#: 16 KiB an HTTP request line may take.
EVENTS_IDS_PER_QUERY = 50
#: Statuses of an endpoint that older servers or Prefect Cloud do not have.
_NO_ENDPOINT = (404, 405)
#: Pages of the runs in Cancelling asked for at a time once the first is full (`_pages`).
CANCELLING_PAGES_IN_FLIGHT = 3
_CANCELLING = {"state": {"type": {"any_": [StateType.CANCELLING]}}}


#: No page read yet (no run's start key is this).
_NO_KEY = object()


def _start_key(item: object) -> str | None:
    """What the server's START_TIME sorts a flow run by: its start time, else its expected one."""
    run = as_mapping(item)
    return as_str(run.get("start_time")) or as_str(run.get("expected_start_time"))


class EventsUnavailable(ApiRefused):
    """The server has no events API (`POST /events/filter` answers 404)."""


@dataclass(frozen=True)
class EventCount:
    """A row of `POST /events/count-by/{countable}`: a value (a resource id, an event name), its events."""

    value: str
    #: The resource's name (by resource), the event's name (by event).
    label: str
    count: int
    #: When the oldest and the newest of those events occurred (ISO 8601).
    start_time: str | None
    end_time: str | None


class PrefectApi(PrefectSession):
    """A small synchronous client over the endpoints the doctor reads."""

    # -- reads ---------------------------------------------------------------

    def check(self) -> None:
        """Fail fast with a clear error when the API is unreachable or refuses."""
        self._request("POST", "/flow_runs/filter", {"limit": 1})

    def cancelling_runs(self) -> list[FlowRun]:
        """All flow runs whose state type is CANCELLING (server-side filter).

        Listed by start time, oldest first: Prefect ≥ 3.9 indexes a run's state type with its
        start time (`ix_flow_run__state_type_coalesce_start_time`), so a page costs the same however
        deep it lies (0.06 s a page of 200 with 18,800 runs in Cancelling, where by id the first
        page took 0.1 s and the last 0.34 s: bench/README.md). That order has no tie-breaker, and a
        database may give runs that start at the same moment in another order from one page to the
        next: where such runs straddle two pages, they are asked for by that moment, whole.
        """
        found: dict[str, FlowRun] = {}
        straddling: set[str | None] = set()
        last: object = _NO_KEY
        for page in self._pages(
            "/flow_runs/filter",
            {"flow_runs": _CANCELLING},
            "START_TIME_ASC",
            in_flight=CANCELLING_PAGES_IN_FLIGHT,
        ):
            if page and _start_key(page[0]) == last:
                straddling.add(_start_key(page[0]))
            last = _start_key(page[-1]) if page else _NO_KEY
            found.update((run.id, run) for run in map(parse_flow_run, page))
        if None in straddling:
            # Runs with neither time cannot be asked for by it: the whole listing again, by id.
            return self._runs({"flow_runs": _CANCELLING})
        for moment in sorted(m for m in straddling if m is not None):
            found.update((run.id, run) for run in map(parse_flow_run, self._cancelling_at(moment)))
        return list(found.values())

    def _cancelling_at(self, moment: str) -> Iterator[object]:
        """The runs in Cancelling that START_TIME sorts at `moment`: started then, or never
        started and expected then (Prefect 3.9's start-time filter reads both, as its sort does;
        the second query is for a server whose filter reads the start time alone)."""
        at = {"after_": moment, "before_": moment}
        yield from self._paged("/flow_runs/filter", {"flow_runs": {**_CANCELLING, "start_time": at}})
        never_started = {**_CANCELLING, "start_time": {"is_null_": True}, "expected_start_time": at}
        yield from self._paged("/flow_runs/filter", {"flow_runs": never_started})

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
        runs: list[FlowRun] = []
        for batch in _batches(sorted(i for i in set(ids) if _is_uuid(i))):
            runs.extend(self._runs({"flow_runs": {"id": {"any_": batch}}}))
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
        names: dict[str, str] = {}
        for batch in _batches(sorted({i for i in ids if i})):
            names.update(self._names(kind, {kind: {"id": {"any_": batch}}}))
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

    def event_counts(self, countable: str, event_filter: dict[str, Any]) -> list[EventCount]:
        """How many events match `event_filter`, per `countable` ("resource", "event"): one request.

        `POST /events/count-by/{countable}` answers one row per resource id (or event name)
        with the count and the times of the oldest and newest; `EventsUnavailable` where the
        server has no such endpoint.
        """
        body = {"filter": event_filter, "time_unit": "week", "time_interval": 1.0}
        raw = self._request("POST", f"/events/count-by/{countable}", body, missing=_NO_ENDPOINT)
        if raw is None:
            raise EventsUnavailable(
                f"{self.url} has no event counts (404 on /events/count-by/{countable})",
                hint="Prefect 3 servers and Prefect Cloud have them",
            )
        if not isinstance(raw, list):
            raise UnexpectedShape("the Prefect API answered an event count with something that is not a list")
        counts = []
        for item in raw:
            row = as_mapping(item)
            value = as_str(row.get("value"))
            if value is None:
                continue
            counts.append(
                EventCount(
                    value=value,
                    label=as_text(row.get("label")) or "",
                    count=as_truncated_int(row.get("count")) or 0,
                    start_time=as_str(row.get("start_time")),
                    end_time=as_str(row.get("end_time")),
                )
            )
        return counts

    def server_settings(self) -> ServerSettings | None:
        """The server's settings (`GET /admin/settings`); None where it has none (Prefect Cloud)."""
        try:
            settings = self._request("GET", "/admin/settings", missing=_NO_ENDPOINT)
        except ApiRefused:
            return None
        return parse_server_settings(settings)

    def variable(self, name: str) -> object:
        """A Prefect variable's value (`GET /variables/name/{name}`); None where it is not set."""
        raw = self._request("GET", f"/variables/name/{quote(name, safe='')}", missing=(404,))
        return raw.get("value") if isinstance(raw, dict) else None

    def runs_by_filter(self, flow_runs: dict[str, Any]) -> list[FlowRun]:
        """Flow runs matching a `flow_runs` filter body (paged)."""
        return self._runs({"flow_runs": flow_runs})

    def child_runs(self, parent_ids: Iterable[str], state_types: Iterable[str]) -> list[FlowRun]:
        """Deployment runs started by these flow runs (`run_deployment`), in one of `state_types`."""
        children: list[FlowRun] = []
        for batch in _batches(sorted(set(parent_ids))):
            body = {
                "parent_flow_run_id": {"any_": batch},
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
        runs: list[TaskRun] = []
        for batch in _batches(sorted(set(ids))):
            body = {"task_runs": {"id": {"any_": batch}}}
            runs.extend(parse_task_run(t) for t in self._paged("/task_runs/filter", body))
        return runs

    def deployments_by_id(self, ids: Iterable[str | None]) -> list[Deployment]:
        """The deployments with these ids (with their concurrency limits)."""
        found: list[Deployment] = []
        for batch in _batches(sorted({i for i in ids if i})):
            body = {"deployments": {"id": {"any_": batch}}}
            found.extend(parse_deployment(d) for d in self._paged("/deployments/filter", body, "NAME_ASC"))
        return found

    def work_pools(self, names: Iterable[str]) -> dict[str, WorkPool]:
        """The work pools with these names, by name (missing names are simply absent)."""
        return self._by_key("/work_pools/filter", "work_pools", "name", names, "NAME_ASC", parse_work_pool)

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
        return self._by_key("/artifacts/latest/filter", "artifacts", "key", keys, "ID_DESC", parse_artifact)

    def create_artifact(self, body: dict[str, Any]) -> ArtifactRef | None:
        """Create an artifact (`POST /artifacts/`); the record the server made."""
        return parse_artifact(self._request("POST", "/artifacts/", body))

    def update_artifact(self, artifact_id: str, body: dict[str, Any]) -> None:
        """Replace an artifact's data and description (`PATCH /artifacts/{id}`)."""
        self._request("PATCH", f"/artifacts/{quote(artifact_id, safe='')}", body)

    def work_pool_ids(self, names: Iterable[str]) -> dict[str, str]:
        """The ids of the work pools with these names, by name (missing names are simply absent)."""
        found: dict[str, str] = {}
        for batch in _batches(sorted(set(names))):
            body = {"work_pools": {"name": {"any_": batch}}}
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

    def _by_key(
        self,
        path: str,
        resource: str,
        key: str,
        wanted: Iterable[str],
        sort: str,
        parse: Callable[[object], _Record | None],
    ) -> dict[str, _Record]:
        """The `resource` items whose `key` is one of `wanted`, parsed, by that key (the record's
        attribute of the same name); what the server does not have is simply absent."""
        found: dict[str, _Record] = {}
        for batch in _batches(sorted(set(wanted))):
            body = {resource: {key: {"any_": batch}}}
            for raw in self._paged(path, body, sort, id_key=key):
                record = parse(raw)
                if record is not None:
                    found[getattr(record, key)] = record
        return found


def _batches(wanted: list[str]) -> Iterator[list[str]]:
    """`wanted` a page at a time: the ids or names one filter request names."""
    for start in range(0, len(wanted), PAGE_SIZE):
        yield wanted[start : start + PAGE_SIZE]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _page_token(next_page: str | None) -> str | None:
    """The raw `page-token` of a `next_page` link (taken as it is: the server does not encode it)."""
    if not next_page or "page-token=" not in next_page:
        return None
    token = next_page.split("page-token=", 1)[1].split("&", 1)[0]
    return token or None
