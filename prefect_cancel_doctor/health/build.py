"""The fleet health report: cancellation over a window, from the API's history.

`build_health_report(api, options)` reads what happened to every cancel
requested in the window, computes time-to-cancel statistics per deployment,
work pool and worker, lists what needs attention (runs stuck now, suspected
orphans, cancels that were ignored, sub-deployment runs outliving a cancelled
parent, concurrency slots held by stuck runs), evaluates the `--fail-on`
rules, and returns a `HealthReport`. Every renderer reads that model;
`HealthReport.to_dict()` is the JSON document.

The history is read by `history.read_cancellations` (events first; the cost
follows the cancelled runs, not the history); the runs stuck now by
`engine.scan`, or from the API alone without sampling. A self-hosted server
keeps events for `PREFECT_SERVER_EVENTS_RETENTION_PERIOD` (7 days by
default): a longer window is reported as such.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from prefect_cancel_doctor.durations import edge_text as _short
from prefect_cancel_doctor.durations import parse_duration
from prefect_cancel_doctor.durations import rough_text as _human
from prefect_cancel_doctor.engine import CONCURRENT_REQUESTS, Options, scan
from prefect_cancel_doctor.fleet import AgentSeen, Fleet, UncoveredPool, read_fleet, uncovered, where_text
from prefect_cancel_doctor.health.history import (
    TIMEOUT_MESSAGE_PREFIX,
    Cancellation,
    Outcome,
    iso,
    read_cancellations,
)
from prefect_cancel_doctor.locate import parse_infrastructure_pid
from prefect_cancel_doctor.model import (
    Cause,
    Diagnosis,
    FlowRunRef,
    Published,
    StateType,
    Target,
    Verdict,
    to_plain,
)
from prefect_cancel_doctor.prefect_api import PrefectApi, to_flow_run_ref
from prefect_cancel_doctor.prefect_records import FlowRun, ServerSettings
from prefect_cancel_doctor.publish import host_name

SCHEMA_VERSION = 1

#: States in which a sub-deployment run still runs (or is about to).
_LIVE_STATES = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED)

#: Upper edges (seconds) of the time-to-cancel histogram's buckets; the last is open.
HISTOGRAM_EDGES = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

_In = TypeVar("_In")
_Out = TypeVar("_Out")

#: Called as work advances: (what is being done, done so far, total).
ProgressFn = Callable[[str, int, int], None]


def _no_progress(what: str, done: int, total: int) -> None:
    pass


#: How many runs a sentence names before "and N more".
NAMED_RUNS = 3


def named(names: Iterable[str], shown: int = NAMED_RUNS) -> str:
    """The first `shown` distinct names, then how many more: 'a, b, c and 4 more'.

    A note or a breach that counts runs says which: the reader can look them up
    without opening the JSON, and a fleet of hundreds still makes one line.
    """
    distinct = list(dict.fromkeys(names))
    more = len(distinct) - shown
    listed = ", ".join(distinct[:shown])
    return f"{listed} and {more} more" if more > 0 else listed


# -- the model -------------------------------------------------------------------------


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

    @property
    def healthy(self) -> bool:
        """True when no rule is breached."""
        return not self.breaches

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """The JSON document: the model as plain values; stuck runs in `scan`'s vocabulary.

        Without `samples`, a sampled run's processes carry how many samples were
        taken (`samples`) instead of every sample's thread stacks: those are
        `scan`'s and `diagnose`'s to show, and they were three quarters of a
        report with two runs sampled (about 100 KB a run, against 2 KB for a run
        not sampled). The verdict, its blocking call and the kernel's view stay.
        """
        document: dict[str, Any] = to_plain(dataclasses.replace(self, stuck=(), live_orphans=()))
        document["stuck"] = [_stuck_plain(s, samples) for s in self.stuck]
        document["live_orphans"] = [_stuck_plain(s, samples) for s in self.live_orphans]
        return document


def _stuck_plain(run: StuckRun, samples: bool = False) -> dict[str, Any]:
    """A stuck run with a `scan` run's keys (flow_run, target, verdict, errors, …), then its own.

    Without `samples`: no thread stacks (neither `threads` of the last sample nor
    each process's series of samples), only `samples`, their number, per process.
    """
    target = run.target
    taken = [len(p.dumps) for p in target.processes] if target else []
    if target is not None and not samples:
        processes = tuple(dataclasses.replace(p, dumps=()) for p in target.processes)
        target = dataclasses.replace(target, processes=processes)
    diagnosis = Diagnosis(run.flow_run, target, run.verdict or _PLACEHOLDER, run.errors)
    entry: dict[str, Any] = to_plain(diagnosis)
    if not samples:
        entry.pop("threads", None)
        for process, count in zip(entry["target"]["processes"] if target else [], taken, strict=True):
            del process["threads"]
            process["samples"] = count
    if run.verdict is None:
        entry["verdict"] = None
    entry.update(location=run.location, sampled=run.sampled, note=run.note, published=to_plain(run.published))
    return entry


_PLACEHOLDER = Verdict(Cause.UNKNOWN, "", 0.0)


# -- options and rules -------------------------------------------------------------------


class RuleName(str, enum.Enum):
    """The `--fail-on` rules."""

    #: Any run in Cancelling.
    STUCK = "stuck"
    #: Any run in Cancelling for longer than DURATION.
    STUCK_OLDER_THAN = "stuck-older-than"
    #: The fleet's p95 time to cancel above DURATION.
    P95_ABOVE = "p95-above"
    #: The fleet's longest time to cancel above DURATION.
    MAX_ABOVE = "max-above"
    #: Any suspected orphan: a cancel ended by the server's timeout, or a process found running.
    ORPHANS = "orphans"
    #: Any run that completed or failed after its cancel was requested.
    IGNORED = "ignored"
    #: Any sub-deployment run still live after its parent was cancelled.
    CHILDREN = "children"
    #: Any concurrency slot held by a run in Cancelling.
    SLOTS = "slots"


_RULES_WITH_DURATION = {RuleName.STUCK_OLDER_THAN, RuleName.P95_ABOVE, RuleName.MAX_ABOVE}

#: One line per rule, for `--fail-on`'s help (the error naming an unknown rule lists the rules).
RULES_HELP = (
    "stuck: any run in Cancelling",
    "stuck-older-than=DURATION: a run in Cancelling for longer than DURATION",
    "p95-above=DURATION: the fleet's p95 time to cancel above DURATION",
    "max-above=DURATION: the fleet's longest time to cancel above DURATION",
    "orphans: a cancel the server's timeout ended, or a finished run's process still running here",
    "ignored: a run completed or failed after its cancel was requested",
    "children: a sub-deployment run still live after its parent was cancelled",
    "slots: a concurrency slot held by a run in Cancelling",
)


@dataclass(frozen=True)
class Rule:
    """A parsed `--fail-on` rule."""

    name: RuleName
    #: The rule's threshold in seconds (duration rules only).
    threshold: float | None
    #: As given, e.g. "p95-above=2m".
    text: str


def parse_rule(text: str) -> Rule:
    """'stuck-older-than=15m' → Rule; ValueError naming the known rules otherwise."""
    name, _, argument = text.strip().partition("=")
    try:
        rule = RuleName(name.strip().lower())
    except ValueError:
        rules = ", ".join(line.partition(":")[0] for line in RULES_HELP)
        raise ValueError(f"unknown rule {name!r}; rules: {rules}") from None
    if rule in _RULES_WITH_DURATION:
        if not argument:
            raise ValueError(f"rule {rule.value} needs a duration, e.g. {rule.value}=15m")
        seconds = parse_duration(argument).total_seconds()
        return Rule(rule, seconds, f"{rule.value}={argument.strip()}")
    if argument:
        raise ValueError(f"rule {rule.value} takes no value (got {text!r})")
    return Rule(rule, None, rule.value)


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    """Every rule of `texts`; each text may hold several, separated by commas or spaces."""
    return tuple(parse_rule(part) for text in texts for part in re.split(r"[,\s]+", text) if part)


@dataclass(frozen=True)
class HealthOptions:
    """What `report` reads and how; every field has a CLI flag and a PCD_* variable."""

    since: timedelta = timedelta(hours=24)
    #: The window as the user wrote it ("24h").
    window_label: str = "24h"
    slow: timedelta = timedelta(seconds=60)
    top: int = 10
    #: Sample the stuck runs' processes here (else: locate them from the API only).
    sample: bool = True
    scan: Options = dataclasses.field(default_factory=Options)
    rules: tuple[Rule, ...] = ()


class OptionError(ValueError):
    """A report option that does not parse; `parameter` names it: since, slow or fail_on."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_health_options(
    *,
    since: str = "24h",
    slow: str = "60s",
    top: int = 10,
    sample: bool = True,
    fail_on: Iterable[str] = (),
    scan: Options | None = None,
) -> HealthOptions:
    """The report's options as people give them (`report`'s flags, the flow's parameters); `OptionError`."""
    return HealthOptions(
        since=_parsed("since", parse_duration, since),
        window_label=since.strip(),
        slow=_parsed("slow", parse_duration, slow),
        top=top,
        sample=sample,
        scan=scan or Options(),
        rules=_parsed("fail_on", parse_rules, fail_on),
    )


def _parsed(parameter: str, parse: Callable[[_In], _Out], value: _In) -> _Out:
    try:
        return parse(value)
    except ValueError as exc:
        raise OptionError(parameter, str(exc)) from None


# -- statistics (pure) ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(seconds: Sequence[float]) -> Distribution:
    """count, p50, p95 and max of a list of durations."""
    return Distribution(
        len(seconds), percentile(seconds, 50), percentile(seconds, 95), max(seconds, default=None)
    )


def _ended(c: Cancellation) -> bool:
    return c.outcome in (Outcome.CANCELLED, Outcome.TIMED_OUT, Outcome.IGNORED) and c.seconds is not None


def group_stats(name: str, cancels: Sequence[Cancellation], slow_seconds: float) -> GroupStats:
    """The statistics of one group of cancels."""
    count = Counter(c.outcome for c in cancels)
    slow = sum(
        1
        for c in cancels
        if c.outcome is Outcome.CANCELLED and c.seconds is not None and c.seconds > slow_seconds
    )
    resisted = count[Outcome.TIMED_OUT] + count[Outcome.IGNORED] + count[Outcome.CANCELLING] + slow
    return GroupStats(
        name=name,
        requested=len(cancels),
        cancelled=count[Outcome.CANCELLED],
        timed_out=count[Outcome.TIMED_OUT],
        ignored=count[Outcome.IGNORED],
        cancelling=count[Outcome.CANCELLING],
        other=count[Outcome.OTHER],
        slow=slow,
        time_to_cancel=distribution([c.seconds for c in cancels if _ended(c) and c.seconds is not None]),
        resisted=resisted,
        resistance=resisted / len(cancels) if cancels else 0.0,
    )


def grouped(
    cancels: Sequence[Cancellation], key: Callable[[Cancellation], str | None], none: str, slow: float
) -> tuple[GroupStats, ...]:
    """Statistics per value of `key` (None → `none`), most cancels first."""
    groups: dict[str, list[Cancellation]] = defaultdict(list)
    for c in cancels:
        groups[key(c) or none].append(c)
    stats = [group_stats(name, items, slow) for name, items in groups.items()]
    return tuple(sorted(stats, key=lambda g: (-g.requested, g.name)))


def histogram(seconds: Sequence[float]) -> tuple[Bucket, ...]:
    """Counts per bucket of `HISTOGRAM_EDGES`."""
    edges = (0.0, *HISTOGRAM_EDGES)
    counts = [0] * len(edges)
    for value in seconds:
        index = sum(1 for edge in HISTOGRAM_EDGES if value >= edge)
        counts[index] += 1
    buckets = []
    for i, lower in enumerate(edges):
        upper = edges[i + 1] if i + 1 < len(edges) else None
        label = f"<{_short(upper)}" if i == 0 else (f"≥{_short(lower)}" if upper is None else None)
        buckets.append(Bucket(label or f"{_short(lower)}–{_short(upper)}", lower, upper, counts[i]))
    return tuple(buckets)


def worst_offenders(by_deployment: Sequence[GroupStats], top: int) -> tuple[GroupStats, ...]:
    """Deployments with resisting cancels: most resisted first, then the highest share."""
    resisting = [g for g in by_deployment if g.resisted]
    return tuple(sorted(resisting, key=lambda g: (-g.resisted, -g.resistance, g.name))[:top])


# -- runs stuck now ------------------------------------------------------------------------


def _stuck_from_diagnosis(d: Diagnosis) -> StuckRun | None:
    if d.flow_run is None:
        return None
    sampled = bool(d.target and any(p.dumps for p in d.target.processes))
    infra = parse_infrastructure_pid(d.flow_run.infrastructure_pid)
    location = d.target.description if d.target else infra.describe()
    note = None
    if not sampled:
        note = (
            d.verdict.summary
            if d.verdict.cause is Cause.NOT_ATTACHABLE
            else "no Python process of the run was sampled here"
        )
    return StuckRun(d.flow_run, location, sampled, d.target, d.verdict, note, d.errors)


def _stuck_from_api(api: PrefectApi, runs: list[FlowRun], now: datetime) -> list[StuckRun]:
    flows = api.names("flows", (r.flow_id for r in runs))
    deployments = api.names("deployments", (r.deployment_id for r in runs))
    stuck = []
    for run in runs:
        ref = to_flow_run_ref(run, flows, deployments, None, None, now)
        note = "not sampled (--no-sample): located from the API only"
        where = parse_infrastructure_pid(ref.infrastructure_pid).describe(started=ref.start_time is not None)
        stuck.append(StuckRun(ref, where, False, None, None, note))
    return stuck


def _order_stuck(stuck: Iterable[StuckRun]) -> tuple[StuckRun, ...]:
    return tuple(sorted(stuck, key=lambda s: (-(s.flow_run.cancelling_for_seconds or 0), s.flow_run.name)))


def top_causes(stuck: Sequence[StuckRun], top: int) -> tuple[Tally, ...]:
    """Causes of the sampled stuck runs, most frequent first."""
    count = Counter(s.verdict.cause.value for s in stuck if s.verdict is not None)
    return tuple(Tally(value, n) for value, n in sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


def top_call_sites(stuck: Sequence[StuckRun], top: int) -> tuple[CallSite, ...]:
    """Blocking call sites of the stuck runs, most shared first."""
    sites: dict[tuple[str, str | None, int | None, str], list[str]] = defaultdict(list)
    for s in stuck:
        call = s.verdict.blocking_call if s.verdict else None
        if call is not None:
            sites[(call.function, call.filename, call.line, call.kind.value)].append(s.flow_run.name)
    ordered = sorted(sites.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1] or "", kv[0][2] or 0))
    return tuple(
        CallSite(f, file, line, kind, len(runs), tuple(runs)) for (f, file, line, kind), runs in ordered[:top]
    )


# -- children and slots ------------------------------------------------------------------------


def orphaned_children(
    api: PrefectApi, cancels: Sequence[Cancellation], runs: dict[str, FlowRun]
) -> tuple[OrphanedChild, ...]:
    """Sub-deployment runs still live whose parent run (cancelled in the window) is Cancelled."""
    parents = {
        c.flow_run_id
        for c in cancels
        if c.flow_run_id in runs and runs[c.flow_run_id].state_type is StateType.CANCELLED
    }
    if not parents:
        return ()
    children = api.child_runs(parents, _LIVE_STATES)
    if not children:
        return ()
    tasks = {
        t.id: t for t in api.task_runs_by_id(c.parent_task_run_id for c in children if c.parent_task_run_id)
    }
    names = api.names("deployments", (c.deployment_id for c in children))
    flows = api.names("flows", (c.flow_id for c in children))
    found = []
    for child in children:
        task = tasks.get(child.parent_task_run_id or "")
        parent = runs.get(task.flow_run_id or "") if task else None
        if parent is None:
            continue
        found.append(
            OrphanedChild(
                flow_run_id=child.id,
                flow_run_name=child.name,
                deployment=f"{flows.get(child.flow_id or '', '?')}/{names[child.deployment_id]}"
                if child.deployment_id in names
                else None,
                state_type=child.state_type,
                state_name=child.state.name if child.state else "",
                parent_id=parent.id,
                parent_name=parent.name,
                parent_state_type=parent.state_type,
                parent_cancelled_at=parent.state.timestamp if parent.state else None,
            )
        )
    return tuple(sorted(found, key=lambda c: (c.parent_name, c.flow_run_name)))


def held_slots(api: PrefectApi, cancelling: Sequence[FlowRun], notes: list[str]) -> tuple[SlotHold, ...]:
    """Concurrency limits whose slots runs in Cancelling hold.

    A deployment's slot is released only when its run leaves Pending, Running
    or Cancelling (the server's `ReleaseFlowConcurrencySlots`), unless its lease
    expires first: the slots held by stuck runs are the active slots not held
    by the deployment's Running and Pending runs. For work pools and queues the
    server itself says which runs it counts (`concurrency_status`).
    """
    holds: list[SlotHold] = []
    by_deployment: dict[str, list[FlowRun]] = defaultdict(list)
    for run in cancelling:
        if run.deployment_id:
            by_deployment[run.deployment_id].append(run)
    for deployment in api.deployments_by_id(by_deployment):
        limit = deployment.limit_slots or deployment.concurrency_limit
        if not limit:
            continue
        active = deployment.active_slots
        stuck = by_deployment[deployment.id]
        others = api.count_runs(
            {
                "deployment_id": {"any_": [deployment.id]},
                "state": {"type": {"any_": ["RUNNING", "PENDING"]}},
            }
        )
        held = min(len(stuck), max(0, (active or 0) - others)) if active is not None else len(stuck)
        if held:
            holds.append(
                SlotHold(
                    scope="deployment",
                    name=deployment.name,
                    limit=limit,
                    active_slots=active,
                    held=held,
                    runs=tuple(sorted(r.name for r in stuck)),
                    detail=f"{active}/{limit} slots in use, {others} by Running or Pending runs: "
                    f"{held} held by runs stuck in Cancelling",
                )
            )
    stuck_ids = {r.id: r.name for r in cancelling}
    pool_names = sorted({r.work_pool_name for r in cancelling if r.work_pool_name})
    pools = api.work_pools(pool_names)
    # One request a pool (no bulk endpoint): sent together.
    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as requests:
        statuses = list(requests.map(api.pool_concurrency_status, pool_names))
    for pool_name, status in zip(pool_names, statuses, strict=True):
        pool = pools.get(pool_name)
        pool_limit = pool.concurrency_limit if pool else None
        if status is None:
            if pool_limit:
                notes.append(
                    f"work pool {pool_name} has a concurrency limit of {pool_limit}; this "
                    "server does not tell which runs count against it"
                )
            continue
        pool_holders = {run_id for q in status.queues for run_id in q.flow_run_ids}
        if pool_limit:
            mine = sorted(stuck_ids[i] for i in pool_holders if i in stuck_ids)
            if mine:
                holds.append(
                    SlotHold(
                        "work_pool",
                        pool_name,
                        pool_limit,
                        status.active_slots,
                        len(mine),
                        tuple(mine),
                        f"{status.active_slots}/{pool_limit} slots in use",
                    )
                )
            else:
                notes.append(
                    f"work pool {pool_name} (limit {pool_limit}): the server does not count "
                    "its runs in Cancelling against the limit"
                )
        for queue in status.queues:
            if not queue.concurrency_limit:
                continue
            mine = sorted(stuck_ids[i] for i in queue.flow_run_ids if i in stuck_ids)
            if mine:
                holds.append(
                    SlotHold(
                        "work_queue",
                        f"{pool_name}/{queue.queue_name}",
                        queue.concurrency_limit,
                        queue.active_slots,
                        len(mine),
                        tuple(mine),
                        f"{queue.active_slots}/{queue.concurrency_limit} slots in use",
                    )
                )
    return tuple(holds)


# -- rules ------------------------------------------------------------------------------------


def evaluate(rules: Sequence[Rule], report: HealthReport) -> tuple[Breach, ...]:
    """The rules `report` breaks, each with a sentence saying how."""
    breaches = []
    for rule in rules:
        message = _check(rule, report)
        if message:
            breaches.append(Breach(rule.text, message))
    return tuple(breaches)


def _check(rule: Rule, r: HealthReport) -> str | None:
    ttc = r.fleet.time_to_cancel
    name = rule.name
    if name is RuleName.STUCK:
        stuck = [s.flow_run.name for s in r.stuck]
        return f"{len(stuck)} run(s) stuck in Cancelling: {named(stuck)}" if stuck else None
    if name is RuleName.STUCK_OLDER_THAN:
        assert rule.threshold is not None
        old = [s for s in r.stuck if (s.flow_run.cancelling_for_seconds or 0) > rule.threshold]
        if not old:
            return None
        oldest = max(s.flow_run.cancelling_for_seconds or 0 for s in old)
        return (
            f"{len(old)} run(s) in Cancelling for longer than {_human(rule.threshold)} "
            f"(oldest {_human(oldest)}): {named(s.flow_run.name for s in _order_stuck(old))}"
        )
    if name is RuleName.P95_ABOVE:
        assert rule.threshold is not None
        if ttc.p95 is None or ttc.p95 <= rule.threshold:
            return None
        return (
            f"p95 time to cancel is {_human(ttc.p95)}, above {_human(rule.threshold)} ({ttc.count} cancels)"
        )
    if name is RuleName.MAX_ABOVE:
        assert rule.threshold is not None
        if ttc.max is None or ttc.max <= rule.threshold:
            return None
        return f"the longest cancel took {_human(ttc.max)}, above {_human(rule.threshold)}"
    if name is RuleName.ORPHANS:
        parts = []
        if r.suspected_orphans:
            timed_out = [c.flow_run_name for c in r.suspected_orphans]
            parts.append(
                f"{len(timed_out)} cancel(s) ended by the server's cancelling timeout: {named(timed_out)}"
            )
        if r.live_orphans:
            live = [s.flow_run.name for s in r.live_orphans]
            parts.append(f"{len(live)} finished run(s) whose processes still run here: {named(live)}")
        return "; ".join(parts) or None
    if name is RuleName.IGNORED:
        ignored = [c.flow_run_name for c in r.ignored_cancels]
        return (
            f"{len(ignored)} run(s) completed or failed after a cancel was requested: {named(ignored)}"
            if ignored
            else None
        )
    if name is RuleName.CHILDREN:
        children = [c.flow_run_name for c in r.orphaned_children]
        return (
            f"{len(children)} sub-deployment run(s) still live after their parent was cancelled: "
            f"{named(children)}"
            if children
            else None
        )
    if name is RuleName.SLOTS:
        held = sum(h.held for h in r.slots)
        holders = named(run for h in r.slots for run in h.runs)
        return f"{held} concurrency slot(s) held by runs stuck in Cancelling: {holders}" if held else None
    raise AssertionError(name)


# -- the report ---------------------------------------------------------------------------------


def build_health_report(
    api: PrefectApi,
    options: HealthOptions,
    progress: ProgressFn = _no_progress,
    now: datetime | None = None,
) -> HealthReport:
    """Read the window's cancellation history and the runs stuck now; compute the report."""
    started, requests_before = time.monotonic(), api.requests
    until = now or datetime.now(timezone.utc)
    since = until - options.since
    notes: list[str] = []
    settings = api.server_settings() or ServerSettings()
    retention = settings.events_retention_seconds
    timeout = settings.cancelling_timeout_seconds
    if retention is not None and options.since.total_seconds() > retention:
        notes.append(
            f"the window ({options.window_label}) is longer than the server's event retention "
            f"({_human(retention)}): cancels before "
            f"{iso(until - timedelta(seconds=retention))} are not counted"
        )

    progress("querying the Prefect API for runs in Cancelling", 0, 0)
    cancelling_now = api.cancelling_runs()
    history = read_cancellations(api, since, until, cancelling_now, progress)
    cancels, runs = history.cancels, history.runs
    notes.extend(history.notes)
    slow = options.slow.total_seconds()

    progress("looking for sub-deployment runs of cancelled runs", 0, 0)
    children = orphaned_children(api, cancels, runs)

    if options.sample:
        scan_options = dataclasses.replace(options.scan, since=options.since)
        report = scan(api, scan_options, progress, cancelling_now)
        found = [s for s in (_stuck_from_diagnosis(d) for d in report.runs) if s is not None]
        stuck = [s for s in found if s.flow_run.state_type == StateType.CANCELLING]
        live_orphans = [s for s in found if s.flow_run.state_type != StateType.CANCELLING]
        errors = report.errors
    else:
        stuck, live_orphans, errors = _stuck_from_api(api, cancelling_now, until), [], ()
    stuck, fleet = _with_fleet(api, stuck, options.since, until)
    notes.extend(fleet.errors)
    progress("reading concurrency limits", 0, 0)
    slots = held_slots(api, cancelling_now, notes)

    ordered_stuck = _order_stuck(stuck)
    by_deployment = grouped(cancels, lambda c: c.deployment, "(no deployment)", slow)
    ended = [c.seconds for c in cancels if _ended(c) and c.seconds is not None]
    source = DataSource(
        method=history.method,
        cancelling_events=history.cancelling_events,
        end_events=history.end_events,
        runs_read=history.runs_read,
        history_reads=history.history_reads,
        requests=api.requests - requests_before,
        seconds=round(time.monotonic() - started, 3),
        events_retention_seconds=retention,
        cancelling_timeout_seconds=timeout,
        notes=tuple(notes),
    )
    report_ = HealthReport(
        api_url=api.url,
        generated_at=iso(until),
        window=Window(iso(since), iso(until), options.since.total_seconds(), options.window_label),
        slow_seconds=slow,
        fleet=group_stats("fleet", cancels, slow),
        histogram=histogram(ended),
        by_deployment=by_deployment,
        by_work_pool=grouped(cancels, lambda c: c.work_pool, "(no work pool)", slow),
        by_worker=grouped(cancels, lambda c: c.worker, "(unknown worker)", slow),
        worst_offenders=worst_offenders(by_deployment, options.top),
        stuck=ordered_stuck,
        live_orphans=_order_stuck(live_orphans),
        sampled=options.sample,
        top_causes=top_causes(ordered_stuck, options.top),
        top_call_sites=top_call_sites(ordered_stuck, options.top),
        suspected_orphans=tuple(c for c in cancels if c.outcome is Outcome.TIMED_OUT),
        ignored_cancels=tuple(c for c in cancels if c.outcome is Outcome.IGNORED),
        orphaned_children=children,
        slots=slots,
        rules=tuple(rule.text for rule in options.rules),
        breaches=(),
        source=source,
        top=options.top,
        errors=tuple(errors),
        agents=fleet.agents,
        uncovered=uncovered(
            [
                (s.flow_run.name, s.flow_run.work_pool_name, s.sampled or s.published is not None)
                for s in stuck
            ],
            fleet,
        ),
    )
    return dataclasses.replace(report_, breaches=evaluate(options.rules, report_))


def _with_fleet(
    api: PrefectApi, stuck: list[StuckRun], window: timedelta, now: datetime
) -> tuple[list[StuckRun], Fleet]:
    """Stuck runs not sampled here with the newest verdict another host published (fleet.py)."""
    here = host_name()
    missing = [s.flow_run.id for s in stuck if not s.sampled]
    if not missing:
        return stuck, Fleet({})
    fleet = read_fleet(api, missing, window=max(window, timedelta(hours=1)), now=now)
    merged = []
    for s in stuck:
        found = fleet.verdicts.get(s.flow_run.id)
        # Another host's verdict where this host has none, cannot see the run, or only reasoned
        # from the API while that host found the run (fleet.should_use says the same for `scan`).
        if (
            found is not None
            and found.published.host != here
            and not s.sampled
            and (
                s.verdict is None
                or s.verdict.cause in (Cause.NOT_ATTACHABLE, Cause.UNKNOWN)
                or found.published.found_there
            )
        ):
            s = dataclasses.replace(
                s,
                location=where_text(found),
                verdict=found.verdict,
                target=None,
                note=None,
                published=found.published,
            )
        merged.append(s)
    return merged, fleet


__all__ = [
    "TIMEOUT_MESSAGE_PREFIX",
    "Breach",
    "Bucket",
    "CallSite",
    "Cancellation",
    "DataSource",
    "Distribution",
    "GroupStats",
    "HealthOptions",
    "HealthReport",
    "OptionError",
    "OrphanedChild",
    "Outcome",
    "Rule",
    "RuleName",
    "SlotHold",
    "StuckRun",
    "Tally",
    "Window",
    "build_health_report",
    "distribution",
    "evaluate",
    "group_stats",
    "histogram",
    "named",
    "parse_duration",
    "parse_health_options",
    "parse_rule",
    "parse_rules",
    "percentile",
    "worst_offenders",
]
