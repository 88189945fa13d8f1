"""Building the fleet health report: cancellation over a window, from the API's history.

`build_health_report(api, options)` reads what happened to every cancel
requested in the window, computes time-to-cancel statistics per deployment,
work pool and worker (statistics.py), lists what needs attention (runs stuck
now, suspected orphans, cancels that were ignored, sub-deployment runs
outliving a cancelled parent, concurrency slots held by stuck runs),
evaluates the `--fail-on` rules (rules.py), and returns a `HealthReport`
(model.py). Every renderer reads that model; `HealthReport.to_dict()` is the
JSON document.

The history is read by `history.read_cancellations` (events first; the cost
follows the cancelled runs, not the history); the runs stuck now by
`engine.scan`, or from the API alone without sampling. A self-hosted server
keeps events for `PREFECT_SERVER_EVENTS_RETENTION_PERIOD` (7 days by
default): a longer window is reported as such.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from prefect_cancel_doctor.clients.prefect_api import PrefectApi, to_flow_run_ref
from prefect_cancel_doctor.clients.prefect_records import FlowRun, ServerSettings
from prefect_cancel_doctor.core.durations import rough_text as _human
from prefect_cancel_doctor.core.links import ui_base_url
from prefect_cancel_doctor.core.progress import ProgressFn
from prefect_cancel_doctor.fleet.protocol import Fleet, read_fleet, uncovered, where_text
from prefect_cancel_doctor.fleet.publish import host_name
from prefect_cancel_doctor.health.history import iso, read_cancellations
from prefect_cancel_doctor.health.model import (
    Cancellation,
    DataSource,
    HealthReport,
    OrphanedChild,
    Outcome,
    SlotHold,
    StuckRun,
    Window,
)
from prefect_cancel_doctor.health.options import HealthOptions
from prefect_cancel_doctor.health.rules import evaluate
from prefect_cancel_doctor.health.statistics import (
    group_stats,
    grouped,
    has_ended,
    histogram,
    order_stuck,
    top_call_sites,
    top_causes,
    worst_offenders,
)
from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.model import Cause, Diagnosis, StateType
from prefect_cancel_doctor.scan.engine import CONCURRENT_REQUESTS, scan

#: States in which a sub-deployment run still runs (or is about to).
_LIVE_STATES = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED)


def _no_progress(what: str, done: int, total: int) -> None:
    pass


class _Abandoned(Exception):
    """The report failed or was interrupted while its history was read: that reading stops."""


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

    abandoned = threading.Event()
    listed: Future[list[FlowRun]] = Future()

    def history_progress(what: str, done: int, total: int) -> None:
        if abandoned.is_set():
            raise _Abandoned
        progress(what, done, total)

    # The history waits on the server: its event count goes out while the runs in Cancelling are
    # listed, and the rest of it is read while their verdicts (on a fleet of thousands stuck,
    # seconds of our own work) are worked out. The listing and the scan stay on this thread, where
    # Ctrl-C and the deadline reach them.
    with ThreadPoolExecutor(1) as aside:
        reading = aside.submit(read_cancellations, api, since, until, listed.result, history_progress)
        try:
            progress("querying the Prefect API for runs in Cancelling", 0, 0)
            cancelling_now = api.cancelling_runs()
            listed.set_result(cancelling_now)
            if options.sample:
                scan_options = dataclasses.replace(options.scan, since=options.since)
                report = scan(api, scan_options, progress, cancelling_now)
                found = [s for s in (_stuck_from_diagnosis(d) for d in report.runs) if s is not None]
                stuck = [s for s in found if s.flow_run.state_type == StateType.CANCELLING]
                live_orphans = [s for s in found if s.flow_run.state_type != StateType.CANCELLING]
                errors = report.errors
            else:
                stuck, live_orphans, errors = _stuck_from_api(api, cancelling_now, until), [], ()
            history = reading.result()
        except BaseException:
            abandoned.set()
            if not listed.done():
                listed.set_exception(_Abandoned())
            raise
    cancels, runs = history.cancels, history.runs
    notes.extend(history.notes)
    slow = options.slow.total_seconds()

    progress("looking for sub-deployment runs of cancelled runs", 0, 0)
    children = orphaned_children(api, cancels, runs)
    stuck, fleet = _with_fleet(api, stuck, options.since, until)
    notes.extend(fleet.errors)
    progress("reading concurrency limits", 0, 0)
    slots = held_slots(api, cancelling_now, notes)

    ordered_stuck = order_stuck(stuck)
    by_deployment = grouped(cancels, lambda c: c.deployment, "(no deployment)", slow)
    ended = [c.seconds for c in cancels if has_ended(c) and c.seconds is not None]
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
        ui_url=options.scan.ui_url or ui_base_url(api.url),
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
        live_orphans=order_stuck(live_orphans),
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
            and (s.verdict is None or s.verdict.cause.inconclusive or found.published.found_there)
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


__all__ = ["ProgressFn", "build_health_report", "held_slots", "orphaned_children"]
