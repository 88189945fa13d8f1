"""The fleet health report's model: what `report` found, as frozen dataclasses.

`HealthReport` holds the window's statistics, the runs stuck now and what needs
attention; every renderer reads it, and `HealthReport.to_dict()` is the JSON
document. `Cancellation` is one cancel of the window and its `Outcome`, as the
history reader (history.py) finds them. Built by build.py; nothing here reads
the API.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prefect_cancel_doctor.fleet.protocol import AgentSeen, UncoveredPool
from prefect_cancel_doctor.model import (
    Cause,
    Diagnosis,
    FlowRunRef,
    Published,
    Target,
    Verdict,
    samples_in_place_of_stacks,
    to_plain,
)

SCHEMA_VERSION = 1


#: How many runs a sentence names before "and N more".
NAMED_RUNS = 3
#: How many stuck runs (and live orphans) the JSON lists without `all_runs`; `omitted` counts the rest.
LISTED_RUNS = 50


def named(names: Iterable[str], shown: int = NAMED_RUNS) -> str:
    """The first `shown` distinct names, then how many more: 'a, b, c and 4 more'.

    A note or a breach that counts runs says which: the reader can look them up
    without opening the JSON, and a fleet of hundreds still makes one line.
    """
    distinct = list(dict.fromkeys(names))
    more = len(distinct) - shown
    listed = ", ".join(distinct[:shown])
    return f"{listed} and {more} more" if more > 0 else listed


class Outcome(str, enum.Enum):
    """How one cancel ended."""

    #: The run reached Cancelled.
    CANCELLED = "cancelled"
    #: The server's cancelling timeout marked it Cancelled: a suspected orphan.
    TIMED_OUT = "timed_out"
    #: It completed, failed or crashed after the cancel was requested.
    IGNORED = "ignored"
    #: Still in Cancelling now.
    CANCELLING = "cancelling"
    #: It left Cancelling for a state that is not final (e.g. rescheduled), or the run was deleted.
    OTHER = "other"


@dataclass(frozen=True)
class Cancellation:
    """One cancel requested in the window and what became of it."""

    flow_run_id: str
    flow_run_name: str
    #: "flow/deployment", or None for a run without a deployment.
    deployment: str | None
    work_pool: str | None
    worker: str | None
    #: ISO time the run entered Cancelling.
    requested_at: str
    outcome: Outcome
    #: ISO time of the state that ended the cancel (None while still Cancelling).
    ended_at: str | None = None
    end_state_type: str | None = None
    end_state_name: str | None = None
    end_message: str | None = None
    #: Time to cancel (ended - requested); for a run still Cancelling, the time so far.
    seconds: float | None = None
    #: The run's infrastructure_pid, where it is known.
    infrastructure_pid: str | None = None


@dataclass(frozen=True)
class Window:
    """The period the report covers."""

    #: ISO time of the window's start.
    since: str
    #: ISO time of its end (when the report was made).
    until: str
    seconds: float
    #: As it was asked for, e.g. "24h".
    label: str


@dataclass(frozen=True)
class Distribution:
    """Time to cancel (Cancelling → a final state), seconds."""

    count: int
    p50: float | None
    p95: float | None
    max: float | None


@dataclass(frozen=True)
class Bucket:
    """One bar of the time-to-cancel histogram: lower <= seconds < upper."""

    label: str
    lower: float
    #: None for the last, open bucket.
    upper: float | None
    count: int


@dataclass(frozen=True)
class GroupStats:
    """Cancels of one deployment, work pool or worker (or the whole fleet)."""

    name: str
    #: Cancels requested in the window.
    requested: int
    cancelled: int
    timed_out: int
    ignored: int
    cancelling: int
    other: int
    #: Cancelled, but slower than the report's `slow_seconds`.
    slow: int
    time_to_cancel: Distribution
    #: Cancels that resisted: timed out, ignored, still Cancelling, or slow.
    resisted: int
    #: resisted / requested.
    resistance: float


@dataclass(frozen=True)
class StuckRun:
    """A run in Cancelling now (or an orphan found on this host), with its verdict where sampled."""

    flow_run: FlowRunRef
    #: Where it lives, read from infrastructure_pid (and /proc when sampled).
    location: str
    #: True when its processes were sampled here.
    sampled: bool
    target: Target | None = None
    #: The doctor's verdict; None when not sampled.
    verdict: Verdict | None = None
    #: Why it was not sampled (or what else to know).
    note: str | None = None
    errors: tuple[str, ...] = ()
    #: Set when the verdict is another host's doctor's, read from its published event (fleet.py).
    published: Published | None = None


@dataclass(frozen=True)
class Tally:
    """A value and how many stuck runs have it (top causes)."""

    value: str
    count: int


@dataclass(frozen=True)
class CallSite:
    """A blocking call site shared by stuck runs."""

    function: str
    filename: str | None
    line: int | None
    kind: str
    count: int
    #: Names of the runs blocked there.
    runs: tuple[str, ...]


@dataclass(frozen=True)
class OrphanedChild:
    """A sub-deployment run still live after its parent run was cancelled."""

    flow_run_id: str
    flow_run_name: str
    deployment: str | None
    state_type: str
    state_name: str
    parent_id: str
    parent_name: str
    parent_state_type: str
    #: ISO time the parent reached its current (Cancelled) state.
    parent_cancelled_at: str | None


@dataclass(frozen=True)
class SlotHold:
    """A concurrency limit with slots held by runs stuck in Cancelling."""

    #: "deployment", "work_pool" or "work_queue".
    scope: str
    name: str
    limit: int
    #: Slots in use now, as the server counts them (None if unknown).
    active_slots: int | None
    #: How many of those slots the stuck runs hold.
    held: int
    #: Names of the runs in Cancelling counted against the limit.
    runs: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class Breach:
    """A `--fail-on` rule the fleet breaks."""

    rule: str
    message: str


@dataclass(frozen=True)
class DataSource:
    """How the history was read, and what it cost."""

    #: "events" (the events API) or "runs" (state histories, where there are no events).
    method: str
    cancelling_events: int
    end_events: int
    runs_read: int
    #: Runs whose state history had to be read one by one.
    history_reads: int
    requests: int
    seconds: float
    #: The server's event retention, where it tells (self-hosted servers).
    events_retention_seconds: float | None
    #: The server's cancelling timeout, where it tells.
    cancelling_timeout_seconds: float | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class HealthReport:
    """Everything `report` found; `to_dict()` is the JSON document."""

    api_url: str | None
    generated_at: str
    window: Window
    #: Cancels slower than this count as resisting.
    slow_seconds: float
    #: All cancels of the window together.
    fleet: GroupStats
    histogram: tuple[Bucket, ...]
    by_deployment: tuple[GroupStats, ...]
    by_work_pool: tuple[GroupStats, ...]
    by_worker: tuple[GroupStats, ...]
    #: Deployments whose runs most often resist cancellation, worst first.
    worst_offenders: tuple[GroupStats, ...]
    #: Runs in Cancelling now, longest first.
    stuck: tuple[StuckRun, ...]
    #: Final-state runs whose processes still run on this host (only when sampled).
    live_orphans: tuple[StuckRun, ...]
    #: Whether stuck runs were sampled on this host.
    sampled: bool
    top_causes: tuple[Tally, ...]
    top_call_sites: tuple[CallSite, ...]
    #: Cancels the server's cancelling timeout ended: their processes may still run.
    suspected_orphans: tuple[Cancellation, ...]
    #: Runs that completed, failed or crashed after a cancel was requested.
    ignored_cancels: tuple[Cancellation, ...]
    orphaned_children: tuple[OrphanedChild, ...]
    slots: tuple[SlotHold, ...]
    #: The `--fail-on` rules evaluated, as given.
    rules: tuple[str, ...]
    breaches: tuple[Breach, ...]
    source: DataSource
    #: How many rows the renderers show per table (JSON has them all).
    top: int = 10
    errors: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION
    kind: str = "cancellation_health_report"
    #: Hosts whose doctor published within the window (`agent`, `scan --publish`), newest scan each.
    agents: tuple[AgentSeen, ...] = ()
    #: Runs in Cancelling no host's doctor answered for, per work pool.
    uncovered: tuple[UncoveredPool, ...] = ()
    #: The Prefect UI's base URL (`core.links.ui_base_url`): run names link to their pages.
    ui_url: str | None = None

    @property
    def healthy(self) -> bool:
        """True when no rule is breached."""
        return not self.breaches

    def to_dict(
        self, *, samples: bool = False, all_runs: bool = False, listed: int = LISTED_RUNS
    ) -> dict[str, Any]:
        """The JSON document: the model as plain values; stuck runs in `scan`'s vocabulary.

        Without `samples`, a sampled run's processes carry how many samples were
        taken (`samples`) instead of every sample's thread stacks: those are
        `scan`'s and `diagnose`'s to show, and they were three quarters of a
        report with two runs sampled (about 100 KB a run, against 2 KB for a run
        not sampled). The verdict, its blocking call and the kernel's view stay.

        Without `all_runs`, `stuck` and `live_orphans` list their first `listed`
        runs (the longest in Cancelling first, the order of the model) and
        `omitted` counts the rest of each: a fleet with 18,850 runs in Cancelling
        made a 17.9 MB document. Every statistic still counts every run.
        """
        document: dict[str, Any] = to_plain(dataclasses.replace(self, stuck=(), live_orphans=()))
        limit = None if all_runs else max(0, listed)
        stuck, live = self.stuck[:limit], self.live_orphans[:limit]
        document["stuck"] = [_stuck_plain(s, samples) for s in stuck]
        document["live_orphans"] = [_stuck_plain(s, samples) for s in live]
        document["listed"] = limit
        document["omitted"] = {
            "stuck": len(self.stuck) - len(stuck),
            "live_orphans": len(self.live_orphans) - len(live),
        }
        # What the document is first: a reader checks them before anything else.
        return {"schema_version": document.pop("schema_version"), "kind": document.pop("kind"), **document}


def _stuck_plain(run: StuckRun, samples: bool = False) -> dict[str, Any]:
    """A stuck run with a `scan` run's keys (flow_run, target, verdict, errors, …), then its own.

    Without `samples`: no thread stacks (neither `threads` of the last sample nor
    each process's series of samples), only `samples`, their number, per process.
    """
    target = run.target
    if target is not None and not samples:
        processes = tuple(dataclasses.replace(p, dumps=()) for p in target.processes)
        target = dataclasses.replace(target, processes=processes)
    diagnosis = Diagnosis(run.flow_run, target, run.verdict or _PLACEHOLDER, run.errors)
    entry: dict[str, Any] = to_plain(diagnosis)
    if not samples:
        entry.pop("threads", None)
        if run.target is not None:
            samples_in_place_of_stacks(entry["target"]["processes"], run.target.processes)
    if run.verdict is None:
        entry["verdict"] = None
    entry.update(location=run.location, sampled=run.sampled, note=run.note, published=to_plain(run.published))
    return entry


_PLACEHOLDER = Verdict(Cause.UNKNOWN, "", 0.0)


__all__ = [
    "LISTED_RUNS",
    "NAMED_RUNS",
    "SCHEMA_VERSION",
    "Breach",
    "Bucket",
    "CallSite",
    "Cancellation",
    "DataSource",
    "Distribution",
    "GroupStats",
    "HealthReport",
    "OrphanedChild",
    "Outcome",
    "SlotHold",
    "StuckRun",
    "Tally",
    "Window",
    "named",
]
