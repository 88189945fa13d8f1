"""A run's timeline: dated facts from the API, its worker and the kernel, oldest first.

The verdict says what is; the timeline shows what happened, so a reader can
check the order of events: the run entered Cancelling at 10:00:40, its worker
last heartbeated at 10:00:05 (so it died before the cancel), the flow process
started at 09:58:12, the logs said nothing of a cancel.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone

from prefect_cancel_doctor.clients.prefect_records import LogLine, State, parse_time
from prefect_cancel_doctor.model import (
    FlowRunRef,
    ProcessSample,
    ProcSnapshot,
    TimelineEntry,
    TimelineSource,
    WorkerInfo,
)
from prefect_cancel_doctor.proc.procfs import PathLike, boot_time

#: Log lines worth a place in the timeline: what the engine, the Runner or the worker said
#: about a cancel, a signal or a crash (or anything at ERROR and above).
_LOG_WORDS = ("cancel", "sigterm", "sigkill", "signal", "crash", "kill", "terminat", "observer", "abort")
#: The Runner's workspace preparation (prefect/deployments/steps/core.py, `run_steps`) logs
#: "Executing deployment step: <name>" per pull step, then "All deployment steps completed
#: successfully": only the step a run is still in is worth a line.
_STEP = "deployment step"
_MAX_LOG_ENTRIES = 8
_ERROR = 40


def build(
    run: FlowRunRef | None,
    history: Sequence[State] = (),
    logs: Sequence[LogLine] = (),
    processes: Iterable[ProcessSample] = (),
    runner: ProcSnapshot | None = None,
    proc_root: PathLike = "/proc",
    infrastructure: Iterable[TimelineEntry] = (),
) -> tuple[TimelineEntry, ...]:
    """Every dated fact known of the run, oldest first (`infrastructure`: what its kind of target
    dates, `Kind.timeline`)."""
    entries: list[TimelineEntry] = []
    for entry in infrastructure:
        moment = parse_time(entry.at)
        if moment is not None:
            entries.append(dataclasses.replace(entry, at=_iso(moment)))
    for state in history:
        moment = parse_time(state.timestamp)
        if moment is not None:
            what = f"entered {state.name or state.type.title()}" + (
                f": {state.message}" if state.message else ""
            )
            entries.append(TimelineEntry(_iso(moment), what, TimelineSource.STATE))
    if run is not None and not history and run.cancelling_since:
        moment = parse_time(run.cancelling_since)
        if moment is not None:
            entries.append(TimelineEntry(_iso(moment), "entered Cancelling", TimelineSource.STATE))
    entries += _workers(run)
    dated = [(process, process.proc) for process in processes if process.proc is not None]
    # /proc/stat only where a process is dated: a fleet's runs on other hosts have none.
    boot = boot_time(proc_root) if dated or runner is not None else None
    if boot is not None:
        for process, proc in dated:
            entries.append(
                TimelineEntry(
                    _iso(_started(proc, boot)),
                    f"{process.role} process {process.pid} started",
                    TimelineSource.PROCESS,
                )
            )
        if runner is not None:
            entries.append(
                TimelineEntry(
                    _iso(_started(runner, boot)),
                    f"its Runner, process {runner.pid}, started",
                    TimelineSource.PROCESS,
                )
            )
    entries += _logs(logs)
    return tuple(sorted(entries, key=lambda entry: entry.at))


def _workers(run: FlowRunRef | None) -> list[TimelineEntry]:
    if run is None:
        return []
    named = str(run.labels.get("prefect.worker.name", ""))
    entries = []
    for worker in run.workers:
        if named and worker.name != named:
            continue
        moment = parse_time(worker.last_heartbeat_time)
        if moment is not None:
            entries.append(TimelineEntry(_iso(moment), _heartbeat(worker), TimelineSource.WORKER))
    return entries


def _heartbeat(worker: WorkerInfo) -> str:
    stale = " (none since: stale)" if worker.heartbeat_is_stale else ""
    return f"worker {worker.name} last heartbeat, status {worker.status}{stale}"


def _logs(logs: Sequence[LogLine]) -> list[TimelineEntry]:
    lowered = [(line, line.message.lower()) for line in logs]
    steps = [line for line, text in lowered if _STEP in text]
    unfinished = steps[-1] if steps and "completed" not in steps[-1].message.lower() else None
    chosen = [
        line
        for line, text in lowered
        if line.level >= _ERROR
        or line is unfinished
        or (_STEP not in text and any(word in text for word in _LOG_WORDS))
    ][-_MAX_LOG_ENTRIES:]
    entries = []
    for line in chosen:
        moment = parse_time(line.timestamp)
        if moment is not None:
            first = line.message.strip().splitlines()[0] if line.message.strip() else ""
            entries.append(TimelineEntry(_iso(moment), f"log: {first[:200]}", TimelineSource.LOG))
    return entries


def _started(proc: ProcSnapshot, boot: datetime) -> datetime:
    return boot + timedelta(seconds=proc.start_time_ticks / os.sysconf("SC_CLK_TCK"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


__all__ = ["build"]
