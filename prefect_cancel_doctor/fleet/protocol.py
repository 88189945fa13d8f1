"""The fleet's verdicts, read back from Prefect's events: what every host's doctor published.

A doctor samples only what runs where it runs. For a stuck run it cannot see,
`scan` and `report` use the newest verdict another host published
(`prefect-cancel-doctor.verdict`, publish.py) about that run, marked with that
host and its age; the `prefect-cancel-doctor.host.scanned` events say which
hosts run an agent and which work pools each sees, so that the runs no agent
answers for are listed per pool.

Reads: one `POST /events/filter` (and its next pages) per 50 runs for their
verdicts, one for the hosts' events of the window. A server without an events
API has no fleet: nothing is read, nothing is said.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect_cancel_doctor.clients.prefect_api import EVENTS_IDS_PER_QUERY, EventsUnavailable, PrefectApi
from prefect_cancel_doctor.clients.prefect_records import Event, parse_time
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.remedies import RESOLVE_NOW, STOP_NOW
from prefect_cancel_doctor.errors import DoctorError
from prefect_cancel_doctor.fleet.publish import HOST_EVENT, HOST_RESOURCE, VERDICT_EVENT, found_here
from prefect_cancel_doctor.model import (
    BlockingCall,
    CallKind,
    Cause,
    Diagnosis,
    InfraKind,
    Published,
    Report,
    Resource,
    ResourceKind,
    StateType,
    Target,
    Verdict,
)

#: How far back verdicts and hosts' events are looked for by default (`scan`).
DEFAULT_WINDOW = timedelta(hours=24)
#: The hosts' events that say which hosts run an agent (and see which pools): the last hour's.
AGENT_WINDOW = timedelta(hours=1)
#: Verdict events read per group of runs at most (newest first): an agent publishes one a scan.
MAX_EVENTS_PER_QUERY = 1000


@dataclass(frozen=True)
class FleetVerdict:
    """A run's verdict as another host's doctor published it."""

    run_id: str
    published: Published
    verdict: Verdict
    #: Where the run lives, as that host described it ("local process 7252").
    target: str | None


@dataclass(frozen=True)
class AgentSeen:
    """A host whose doctor scanned within the window, and what it saw there."""

    host: str
    #: ISO time of its newest scan.
    seen_at: str
    age_seconds: float | None
    work_pools: tuple[str, ...]
    workers: tuple[str, ...]


@dataclass(frozen=True)
class UncoveredPool:
    """Runs stuck in Cancelling that no host's doctor answered for, in one work pool."""

    pool: str
    runs: tuple[str, ...]
    #: Hosts whose doctor sees a worker of this pool (empty: no agent covers the pool at all).
    agents: tuple[str, ...]

    @property
    def text(self) -> str:
        """One sentence for a report."""
        names = ", ".join(self.runs[:5]) + (f" and {len(self.runs) - 5} more" if len(self.runs) > 5 else "")
        if not self.agents:
            return f"work pool {self.pool}: no agent covers it ({names})"
        return (
            f"work pool {self.pool}: the agents on {', '.join(self.agents)} see it but published no verdict "
            f"for {names} (they run on another host of the pool)"
        )


@dataclass(frozen=True)
class Fleet:
    """What the fleet's doctors published: each run's best verdict, and the hosts that scanned."""

    verdicts: Mapping[str, FleetVerdict]
    agents: tuple[AgentSeen, ...] = ()
    #: Why the fleet could not be read (one sentence each).
    errors: tuple[str, ...] = ()


def read_fleet(
    api: PrefectApi,
    run_ids: Iterable[str],
    *,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> Fleet:
    """The newest verdict of each run (a host that found the run first), and the hosts that scanned.

    First one request: has any host published within the window? Where none has (a
    fleet without agents), that is all it costs. Then the verdicts of the runs (per 50
    runs), and the hosts' events of the last `AGENT_WINDOW` (newest first, at most
    `MAX_EVENTS_PER_QUERY`), the newest of each host.
    """
    now = now or datetime.now(timezone.utc)
    until = (now + timedelta(minutes=5)).isoformat()
    occurred = {"since": (now - window).isoformat(), "until": until}
    recent = {"since": (now - min(window, AGENT_WINDOW)).isoformat(), "until": until}
    wanted = sorted(set(run_ids))
    verdicts: dict[str, FleetVerdict] = {}
    agents: dict[str, AgentSeen] = {}
    try:
        anyone = {"occurred": occurred, "event": {"name": [HOST_EVENT]}, "order": "DESC"}
        if next(iter(api.events(anyone)), None) is None:
            return Fleet({})
        for start in range(0, len(wanted), EVENTS_IDS_PER_QUERY):
            chunk = wanted[start : start + EVENTS_IDS_PER_QUERY]
            event_filter = {
                "occurred": occurred,
                "event": {"name": [VERDICT_EVENT]},
                "related": {"id": [f"prefect.flow-run.{run_id}" for run_id in chunk]},
                "order": "DESC",
            }
            for count, event in enumerate(api.events(event_filter), 1):
                _keep_best(verdicts, parse_verdict_event(event, now))
                if count >= MAX_EVENTS_PER_QUERY:
                    break
        hosts_filter = {"occurred": recent, "event": {"name": [HOST_EVENT]}, "order": "DESC"}
        for count, event in enumerate(api.events(hosts_filter), 1):
            seen = parse_host_event(event, now)
            if seen is not None and seen.host not in agents:
                agents[seen.host] = seen
            if count >= MAX_EVENTS_PER_QUERY:
                break
    except EventsUnavailable:
        return Fleet({})
    except DoctorError as exc:
        return Fleet(verdicts, (), (f"the fleet's published verdicts could not be read: {exc}",))
    return Fleet(verdicts, tuple(sorted(agents.values(), key=lambda a: a.host)))


def _keep_best(verdicts: dict[str, FleetVerdict], candidate: FleetVerdict | None) -> None:
    """Events come newest first: keep the first, unless a later one is from a host that found the run."""
    if candidate is None:
        return
    kept = verdicts.get(candidate.run_id)
    if kept is None or (candidate.published.found_there and not kept.published.found_there):
        verdicts[candidate.run_id] = candidate


# -- parsing our own events back (their payloads are what publish.py wrote; trusted no more than the API)


def _str(payload: Mapping[str, Any], key: str, limit: int = 1000) -> str | None:
    value = payload.get(key)
    return visible(value, limit) if isinstance(value, str) and value else None


def _number(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _strings(value: object, limit: int = 1000) -> tuple[str, ...]:
    return (
        tuple(visible(v, limit) for v in value if isinstance(v, str))[:50] if isinstance(value, list) else ()
    )


def _age(occurred: str | None, now: datetime) -> float | None:
    when = parse_time(occurred)
    return max(0.0, (now - when).total_seconds()) if when else None


def parse_verdict_event(event: Event, now: datetime) -> FleetVerdict | None:
    """A `prefect-cancel-doctor.verdict` event as a verdict; None when it names no run or no cause."""
    payload = event.payload
    run_id = next(
        (
            r["prefect.resource.id"].removeprefix("prefect.flow-run.")
            for r in event.related
            if r.get("prefect.resource.role") == "flow-run"
            and r.get("prefect.resource.id", "").startswith("prefect.flow-run.")
        ),
        None,
    )
    cause_text = _str(payload, "cause")
    if run_id is None or cause_text is None or event.occurred is None:
        return None
    try:
        cause = Cause(cause_text)
    except ValueError:
        cause = Cause.UNKNOWN
    host = event.resource.get("prefect.resource.id", "").removeprefix(HOST_RESOURCE) or "?"
    also = tuple(
        Verdict(_cause(item.get("cause")), _str(item, "summary") or "", 0.0)
        for item in payload.get("also") or ()
        if isinstance(item, dict)
    )
    host = visible(host, 200)
    # Its stop-now commands name that host's PIDs: never offered as commands to run here, where the
    # same PID is another process; the fix says where they belong.
    remediation = tuple(_on_host(fix, host) for fix in _strings(payload.get("remediation")))
    verdict = Verdict(
        cause=cause,
        summary=_str(payload, "summary") or "",
        confidence=_number(payload, "confidence") or 0.0,
        blocking_call=_call(payload.get("blocking_call")),
        evidence=_strings(payload.get("evidence")),
        remediation=remediation,
        short_fix=_str(payload, "short_fix", 200) or "",
        stop_now=(),
        also=also,
    )
    published = Published(
        host=host,
        published_at=event.occurred,
        age_seconds=_age(event.occurred, now),
        found_there=payload.get("found_here") is True,
        doctor_version=_str(payload, "doctor_version", 50),
        event_id=event.id,
    )
    return FleetVerdict(run_id, published, verdict, _str(payload, "target", 300))


def _cause(value: object) -> Cause:
    try:
        return Cause(value)
    except ValueError:
        return Cause.UNKNOWN


def _call(raw: object) -> BlockingCall | None:
    if not isinstance(raw, dict) or not _str(raw, "function"):
        return None
    try:
        kind = CallKind(raw.get("kind"))
    except ValueError:
        kind = CallKind.OTHER
    line = raw.get("line")
    waits_on = _str(raw, "waits_on", 500)
    return BlockingCall(
        kind=kind,
        function=_str(raw, "function", 300) or "?",
        filename=_str(raw, "filename", 500),
        line=line if isinstance(line, int) and not isinstance(line, bool) else None,
        code=_str(raw, "code", 300),
        thread_name=_str(raw, "thread_name", 200),
        native=_str(raw, "native", 200),
        on_event_loop=False,
        stable=raw.get("stable") is not False,
        resource=Resource(ResourceKind.OTHER, waits_on) if waits_on else None,
    )


def parse_host_event(event: Event, now: datetime) -> AgentSeen | None:
    """A `prefect-cancel-doctor.host.scanned` event; None without a host or a time."""
    host = _str(event.payload, "host", 200)
    if host is None or event.occurred is None:
        return None
    return AgentSeen(
        host,
        event.occurred,
        _age(event.occurred, now),
        _strings(event.payload.get("work_pools"), 200),
        _strings(event.payload.get("workers"), 200),
    )


# -- using them ------------------------------------------------------------------------------------


def age_text(seconds: float | None) -> str:
    """'3m05s ago' (durations as everywhere else)."""
    from prefect_cancel_doctor.core.durations import seconds_text

    return f"{seconds_text(seconds)} ago" if seconds is not None else "at an unknown time"


def where_text(fleet_verdict: FleetVerdict) -> str:
    """Where the run lives and who said so: 'local process 7252 on host node-7 (published 2m ago)'."""
    published = fleet_verdict.published
    where = fleet_verdict.target or "the run"
    return f"{where} on host {published.host} (its verdict, published {age_text(published.age_seconds)})"


def should_use(d: Diagnosis, fleet_verdict: FleetVerdict | None, here: str) -> bool:
    """Whether another host's verdict replaces this host's for a run.

    Never for a run found here (this host's sample is fresher and first-hand), nor
    a verdict this host published itself; always where this host cannot see the
    run (an inconclusive cause, `Cause.inconclusive`); and where the other host found the run
    (its processes, its container) while this host could only reason from the API.
    """
    if fleet_verdict is None or d.flow_run is None or found_here(d) or fleet_verdict.published.host == here:
        return False
    return d.verdict.cause.inconclusive or fleet_verdict.published.found_there


def with_fleet(report: Report, fleet: Fleet, here: str) -> Report:
    """`report` with the fleet's verdicts for the runs this host could not diagnose first-hand."""
    runs = []
    for d in report.runs:
        fleet_verdict = fleet.verdicts.get(d.flow_run.id) if d.flow_run else None
        if fleet_verdict is None or not should_use(d, fleet_verdict, here):
            runs.append(d)
            continue
        kind = d.target.kind if d.target else InfraKind.UNKNOWN
        target = Target(kind=kind, description=where_text(fleet_verdict), host=fleet_verdict.published.host)
        runs.append(
            dataclasses.replace(
                d, verdict=fleet_verdict.verdict, target=target, published=fleet_verdict.published
            )
        )
    return dataclasses.replace(report, runs=tuple(runs))


def uncovered(stuck: Sequence[tuple[str, str | None, bool]], fleet: Fleet) -> tuple[UncoveredPool, ...]:
    """Runs in Cancelling no host answered for — (name, pool, answered for) each — grouped by pool."""
    by_pool: dict[str, list[str]] = defaultdict(list)
    for name, pool, answered in stuck:
        if not answered:
            by_pool[pool or "(no work pool)"].append(name)
    watchers: dict[str, list[str]] = defaultdict(list)
    for agent in fleet.agents:
        for pool in agent.work_pools:
            watchers[pool].append(agent.host)
    return tuple(
        UncoveredPool(pool, tuple(sorted(names)), tuple(sorted(watchers.get(pool, ()))))
        for pool, names in sorted(by_pool.items())
    )


def report_uncovered(report: Report, fleet: Fleet) -> tuple[UncoveredPool, ...]:
    """`uncovered` for a scan's report: its runs in Cancelling found neither here nor by another
    host, and for which no host (this one included: `scan --publish`) published a verdict."""
    return uncovered(
        [
            (
                d.flow_run.name,
                d.flow_run.work_pool_name,
                found_here(d) or d.flow_run.id in fleet.verdicts,  # another host's, or ours
            )
            for d in report.runs
            if d.flow_run is not None and d.flow_run.state_type == StateType.CANCELLING
        ],
        fleet,
    )


def fleet_for_report(
    api: PrefectApi, report: Report, here: str
) -> tuple[Report, tuple[UncoveredPool, ...], tuple[str, ...]]:
    """`scan`: the fleet's verdicts for runs not found here; the runs no agent answers for, per pool
    (only where the fleet has agents); and why the fleet could not be read, if it could not.

    Costs nothing when every run was found here.
    """
    missing = [d.flow_run.id for d in report.runs if d.flow_run is not None and not found_here(d)]
    if not missing:
        return report, (), ()
    fleet = read_fleet(api, missing)
    merged = with_fleet(report, fleet, here)
    return merged, report_uncovered(merged, fleet) if fleet.agents else (), fleet.errors


def _on_host(fix: str, host: str) -> str:
    """A published fix that acts on the publishing host's processes, said to be run there: its PIDs
    are that host's, and here the same PID is another process."""
    for prefix, what in ((RESOLVE_NOW, "end it now"), (STOP_NOW, "or by hand")):
        if fix.startswith(prefix):
            return f"{what}, on host {host} (not here): {fix.removeprefix(prefix)}"
    return fix


__all__ = [
    "DEFAULT_WINDOW",
    "AgentSeen",
    "Fleet",
    "FleetVerdict",
    "UncoveredPool",
    "age_text",
    "fleet_for_report",
    "parse_host_event",
    "parse_verdict_event",
    "read_fleet",
    "report_uncovered",
    "should_use",
    "uncovered",
    "where_text",
    "with_fleet",
]
