"""What the Prefect API answers, parsed at the boundary into small frozen records.

`PrefectApi` turns every JSON body into these records; nothing past it indexes
a dict from the API. Parsing is tolerant of what a server may legitimately
leave out (a run without a state, a worker that never sent a heartbeat) and
strict about what makes a record meaningless (an item without an id): that is
`UnexpectedShape`, an API error with exit code 3, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prefect_cancel_doctor.clients._fields import (
    as_float,
    as_mapping,
    as_string_values,
    as_text,
    as_truncated_int,
)
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.errors import ApiRefused
from prefect_cancel_doctor.model import LabelValue, StateType


class UnexpectedShape(ApiRefused):
    """A 200 answer whose JSON is not what the Prefect API sends."""


@dataclass(frozen=True)
class State:
    """A flow run's state: the current one, or one of its history."""

    type: StateType
    name: str
    message: str | None = None
    #: ISO time the run entered it, as the API wrote it.
    timestamp: str | None = None


@dataclass(frozen=True)
class FlowRun:
    """A flow run, as `POST /flow_runs/filter` or `GET /flow_runs/{id}` returns it."""

    id: str
    name: str
    flow_id: str | None = None
    deployment_id: str | None = None
    work_pool_name: str | None = None
    state: State | None = None
    start_time: str | None = None
    infrastructure_pid: str | None = None
    labels: Mapping[str, LabelValue] = field(default_factory=dict)
    parent_task_run_id: str | None = None
    end_time: str | None = None

    @property
    def state_type(self) -> StateType:
        """The current state's type (UNKNOWN when the run has no state)."""
        return self.state.type if self.state else StateType.UNKNOWN

    def label(self, key: str) -> str | None:
        """A label's value as text, None when absent or empty."""
        value = self.labels.get(key)
        return str(value) if value not in (None, "") else None


@dataclass(frozen=True)
class Worker:
    """A worker of a work pool (`POST /work_pools/{name}/workers/filter`)."""

    name: str
    status: str | None = None
    last_heartbeat_time: str | None = None
    heartbeat_interval_seconds: float | None = None


@dataclass(frozen=True)
class WorkPool:
    """A work pool (`POST /work_pools/filter`)."""

    name: str
    concurrency_limit: int | None = None


@dataclass(frozen=True)
class Deployment:
    """A deployment and its concurrency limit (`POST /deployments/filter`)."""

    id: str
    name: str
    concurrency_limit: int | None = None
    #: The global concurrency limit that backs the deployment's limit (recent servers).
    limit_slots: int | None = None
    active_slots: int | None = None
    #: Where the flow's code is, relative to the deployment's `path` (a served deployment's
    #: path is ".": its entrypoint is relative to where `flow.serve()` ran).
    entrypoint: str | None = None


@dataclass(frozen=True)
class TaskRun:
    """A task run: only what links a subflow's parent task to its flow run."""

    id: str
    flow_run_id: str | None = None


@dataclass(frozen=True)
class QueueConcurrency:
    """One queue of `POST /work_pools/{name}/concurrency_status`."""

    queue_name: str | None
    concurrency_limit: int | None
    active_slots: int | None
    #: The runs the server counts against the queue's (and the pool's) limit.
    flow_run_ids: tuple[str, ...]


@dataclass(frozen=True)
class PoolConcurrency:
    """Which runs a work pool's limits count, as the server says."""

    active_slots: int | None
    queues: tuple[QueueConcurrency, ...]


@dataclass(frozen=True)
class Event:
    """A Prefect event (`POST /events/filter`), with what the history reader uses."""

    id: str
    event: str
    occurred: str | None
    #: The resource's labels (`prefect.resource.id`, `prefect.state-type`, ...).
    resource: Mapping[str, str]
    #: Related resources' labels (`prefect.resource.role`, `prefect.resource.name`, ...).
    related: tuple[Mapping[str, str], ...] = ()
    #: The state type the run left (state-change events' `payload.initial_state`).
    initial_state_type: str | None = None
    #: The message of the state it entered (`payload.validated_state.message`).
    validated_message: str | None = None
    #: The event's payload as sent (the fleet reader parses its own events' payloads: fleet.py).
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact, as far as publishing the doctor's own needs (`POST /artifacts/latest/filter`)."""

    #: The artifact's id (of the latest version, for a key's latest artifact).
    id: str
    key: str
    flow_run_id: str | None = None


@dataclass(frozen=True)
class EventPage:
    """One page of events, the total matching and the token of the next page."""

    events: tuple[Event, ...]
    total: int
    next_page: str | None


@dataclass(frozen=True)
class LogLine:
    """One line of a flow run's logs (`POST /logs/filter`)."""

    timestamp: str
    level: int
    message: str
    logger: str | None = None


@dataclass(frozen=True)
class ServerSettings:
    """The server settings the health report reads (`GET /admin/settings`)."""

    events_retention_seconds: float | None = None
    cancelling_timeout_seconds: float | None = None


# -- parsers ---------------------------------------------------------------------------------


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise UnexpectedShape(f"the Prefect API answered {what} with {type(value).__name__}, not a list")
    return value


def _id(item: object, what: str) -> str:
    value = as_mapping(item).get("id")
    if not isinstance(value, str) or not value:
        raise UnexpectedShape(f"the Prefect API answered {what} with an item without an id")
    return visible(value)


def _label_value(value: object) -> LabelValue:
    if isinstance(value, str):
        return visible(value)
    return value if isinstance(value, (int, float, bool)) or value is None else visible(str(value))


def parse_state(raw: object) -> State | None:
    """A state object; None when absent."""
    if not isinstance(raw, dict):
        return None
    state_type = StateType.parse(raw.get("type"))
    return State(
        type=state_type,
        name=as_text(raw.get("name")) or "",
        message=as_text(raw.get("message")),
        timestamp=as_text(raw.get("timestamp")),
    )


def parse_flow_run(raw: object, what: str = "a flow run") -> FlowRun:
    """A flow run record."""
    run_id = _id(raw, what)
    item = as_mapping(raw)
    return FlowRun(
        id=run_id,
        name=as_text(item.get("name")) or run_id,
        flow_id=as_text(item.get("flow_id")),
        deployment_id=as_text(item.get("deployment_id")),
        work_pool_name=as_text(item.get("work_pool_name")),
        state=parse_state(item.get("state")),
        start_time=as_text(item.get("start_time")),
        end_time=as_text(item.get("end_time")),
        infrastructure_pid=_infrastructure_pid(item.get("infrastructure_pid")),
        labels={visible(str(k)): _label_value(v) for k, v in as_mapping(item.get("labels")).items()},
        parent_task_run_id=as_text(item.get("parent_task_run_id")),
    )


def _infrastructure_pid(value: object) -> str | None:
    # Servers store it as text; a number is a process worker's PID all the same.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return visible(value) if isinstance(value, str) and value else None


def parse_flow_runs(raw: object) -> list[FlowRun]:
    """A list of flow runs."""
    return [parse_flow_run(item, "a flow run listing") for item in _list(raw, "a flow run listing")]


def parse_states(raw: object) -> list[State]:
    """A run's state history, oldest first (states without a timestamp last)."""
    states = [s for s in (parse_state(item) for item in _list(raw, "a state history")) if s]
    return sorted(states, key=lambda s: (s.timestamp is None, s.timestamp or ""))


def parse_names(raw: object, what: str) -> dict[str, str]:
    """Names by id, from a listing of flows or deployments."""
    return {_id(item, what): as_text(as_mapping(item).get("name")) or "?" for item in _list(raw, what)}


def parse_worker(raw: object) -> Worker | None:
    """A worker; None for an item without a name."""
    item = as_mapping(raw)
    name = as_text(item.get("name"))
    if name is None:
        return None
    return Worker(
        name=name,
        status=as_text(item.get("status")),
        last_heartbeat_time=as_text(item.get("last_heartbeat_time")),
        heartbeat_interval_seconds=as_float(item.get("heartbeat_interval_seconds")),
    )


def parse_workers(raw: object) -> list[Worker]:
    """A pool's workers."""
    return [w for w in (parse_worker(item) for item in _list(raw, "a worker listing")) if w]


def parse_work_pool(raw: object) -> WorkPool | None:
    """A work pool; None for an item without a name."""
    item = as_mapping(raw)
    name = as_text(item.get("name"))
    return WorkPool(name, as_truncated_int(item.get("concurrency_limit"))) if name else None


def parse_deployment(raw: object) -> Deployment:
    """A deployment with its concurrency limits."""
    deployment_id = _id(raw, "a deployment listing")
    item = as_mapping(raw)
    gcl = as_mapping(item.get("global_concurrency_limit"))
    return Deployment(
        id=deployment_id,
        name=as_text(item.get("name")) or deployment_id,
        concurrency_limit=as_truncated_int(item.get("concurrency_limit")),
        limit_slots=as_truncated_int(gcl.get("limit")),
        active_slots=as_truncated_int(gcl.get("active_slots")),
        entrypoint=as_text(item.get("entrypoint")),
    )


def parse_task_run(raw: object) -> TaskRun:
    """A task run's link to its flow run."""
    return TaskRun(_id(raw, "a task run listing"), as_text(as_mapping(raw).get("flow_run_id")))


def parse_pool_concurrency(raw: object) -> PoolConcurrency | None:
    """A pool's concurrency status; None when the answer is not one."""
    if not isinstance(raw, dict):
        return None
    queues = tuple(
        QueueConcurrency(
            queue_name=as_text(queue.get("queue_name")),
            concurrency_limit=as_truncated_int(queue.get("concurrency_limit")),
            active_slots=as_truncated_int(queue.get("active_slots")),
            flow_run_ids=tuple(
                run["id"]
                for run in (as_mapping(r) for r in queue.get("flow_runs") or () if isinstance(r, dict))
                if isinstance(run.get("id"), str)
            ),
        )
        for queue in (as_mapping(q) for q in raw.get("queues") or () if isinstance(q, dict))
    )
    return PoolConcurrency(as_truncated_int(raw.get("active_slots")), queues)


def parse_logs(raw: object) -> list[LogLine]:
    """A page of log lines (items without a timestamp or a message are left out)."""
    lines = []
    for item in _list(raw, "a log listing"):
        entry = as_mapping(item)
        timestamp, message = as_text(entry.get("timestamp")), entry.get("message")
        if timestamp and isinstance(message, str):
            level = as_truncated_int(entry.get("level")) or 0
            lines.append(LogLine(timestamp, level, visible(message, 500), as_text(entry.get("name"))))
    return lines


def parse_event(raw: object) -> Event:
    """An event."""
    event_id = _id(raw, "an event page")
    item = as_mapping(raw)
    payload = as_mapping(item.get("payload"))
    related = item.get("related")
    return Event(
        id=event_id,
        event=as_text(item.get("event")) or "",
        occurred=as_text(item.get("occurred")),
        resource=as_string_values(item.get("resource")),
        related=tuple(as_string_values(r) for r in related if isinstance(r, dict))
        if isinstance(related, list)
        else (),
        initial_state_type=as_text(as_mapping(payload.get("initial_state")).get("type")),
        validated_message=as_text(as_mapping(payload.get("validated_state")).get("message")),
        payload=payload,
    )


def parse_artifact(raw: object) -> ArtifactRef | None:
    """An artifact (or a key's latest artifact, whose id is `latest_id`); None without a key."""
    item = as_mapping(raw)
    artifact_id, key = as_text(item.get("latest_id")) or as_text(item.get("id")), as_text(item.get("key"))
    if not artifact_id or not key:
        return None
    return ArtifactRef(artifact_id, key, as_text(item.get("flow_run_id")))


def parse_event_page(raw: object) -> EventPage:
    """A page of `POST /events/filter` or its next pages."""
    if not isinstance(raw, dict):
        raise UnexpectedShape("the Prefect API answered an event query with something that is not a page")
    events = raw.get("events") or []
    return EventPage(
        tuple(parse_event(e) for e in _list(events, "an event page")),
        as_truncated_int(raw.get("total")) or 0,
        as_text(raw.get("next_page")),
    )


def parse_server_settings(raw: object) -> ServerSettings | None:
    """The durations the health report reads from the server's settings."""
    if not isinstance(raw, dict):
        return None
    server = as_mapping(raw.get("server"))
    return ServerSettings(
        events_retention_seconds=parse_setting_seconds(
            as_mapping(server.get("events")).get("retention_period")
        ),
        cancelling_timeout_seconds=parse_setting_seconds(
            as_mapping(as_mapping(server.get("services")).get("cancellation_cleanup")).get(
                "cancelling_timeout_seconds"
            )
        ),
    )


_ISO_DURATION = re.compile(
    r"P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?"
)


def parse_setting_seconds(value: object) -> float | None:
    """A setting's duration: seconds as a number, or ISO 8601 ('P7D', 'PT300S')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    match = _ISO_DURATION.fullmatch(value)
    if not match or value in ("P", "PT"):
        try:
            return float(value)
        except ValueError:
            return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


_FRACTION = re.compile(r"(?<=:\d\d)\.(\d{1,9})")


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp as an aware datetime (None when absent or unreadable)."""
    if not value:
        return None
    # Python 3.10's fromisoformat takes 3 or 6 fractional digits only; servers send 1 to 9.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value.replace("Z", "+00:00"), count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


__all__ = [
    "ArtifactRef",
    "Deployment",
    "Event",
    "EventPage",
    "FlowRun",
    "LogLine",
    "PoolConcurrency",
    "QueueConcurrency",
    "ServerSettings",
    "State",
    "TaskRun",
    "UnexpectedShape",
    "WorkPool",
    "Worker",
    "parse_artifact",
    "parse_deployment",
    "parse_event",
    "parse_event_page",
    "parse_flow_run",
    "parse_flow_runs",
    "parse_logs",
    "parse_names",
    "parse_pool_concurrency",
    "parse_server_settings",
    "parse_setting_seconds",
    "parse_state",
    "parse_states",
    "parse_task_run",
    "parse_time",
    "parse_work_pool",
    "parse_worker",
    "parse_workers",
]
