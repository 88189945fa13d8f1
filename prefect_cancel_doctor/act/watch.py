"""`watch`: stuck runs re-diagnosed every few seconds, and the moment each leaves Cancelling.

Each refresh is a cheap scan: one plain (not native) py-spy dump per process and /proc,
so watching costs a target about what one `scan --no-native --samples 1` does (see
bench/watch.py). A run that leaves Cancelling stays in view with its final state.
On a terminal the view is redrawn (rich `Live`); otherwise one line is printed per change.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prefect_cancel_doctor.model import Cause, Diagnosis, Report, Role, StateType
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.render.watch_view import Row

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.scan.engine import Options

_SIGTERM = 15


def rows(report: Report, previous: dict[str, Row]) -> dict[str, Row]:
    """The rows of a fresh report, compared with the previous refresh's."""
    found: dict[str, Row] = {}
    for diagnosis in report.runs:
        run = diagnosis.flow_run
        if run is None:
            continue
        call = _call(diagnosis)
        before = previous.get(run.id)
        unsampled = diagnosis.verdict.cause is Cause.NOT_ATTACHABLE and run.state_type == StateType.CANCELLING
        if unsampled and before is not None and before.cause != Cause.NOT_ATTACHABLE.value:
            # One failed sample (`resolve` or another doctor attached just then) is no new verdict.
            found[run.id] = dataclasses.replace(before, cancelling_for=run.cancelling_for_seconds, stale=True)
            continue
        found[run.id] = Row(
            run_id=run.id,
            name=run.name,
            state=run.state_name or run.state_type.value,
            cancelling_for=run.cancelling_for_seconds,
            cause=diagnosis.verdict.cause.value,
            call=call,
            moved=None if before is None else before.call != call,
            sigterm=_sigterm(diagnosis),
            left_at=_left_at(run.state_type, before),
        )
    return found


def gone_from_view(previous: dict[str, Row], now: dict[str, Row], states: dict[str, str]) -> dict[str, Row]:
    """Rows of runs no longer in the scan (they left Cancelling), with their state now (`states`)."""
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    kept = {}
    for run_id, row in previous.items():
        if run_id not in now:
            state = states.get(run_id, row.state)
            kept[run_id] = dataclasses.replace(row, state=state, left_at=row.left_at or stamp, moved=False)
    return kept


def changes(previous: dict[str, Row], now: dict[str, Row]) -> list[str]:
    """One line per run that is new, changed cause or call, or left Cancelling."""
    lines = []
    for run_id, row in now.items():
        before = previous.get(run_id)
        if row.stale:
            continue
        if before is None or (before.cause, before.call, before.left_at) != (
            row.cause,
            row.call,
            row.left_at,
        ):
            lines.append(row.line())
    return lines


def change_lines(write: Callable[[str], None]) -> Callable[[dict[str, Row]], None]:
    """A `show` for `watch` off a terminal: each refresh's `changes`, one timestamped line each."""
    shown: dict[str, Row] = {}

    def show(view: dict[str, Row]) -> None:
        for line in changes(shown, view):
            write(f"{time.strftime('%H:%M:%S')} {line}")
        shown.clear()
        shown.update(view)

    return show


def watch(
    refresh: Callable[[], Report],
    states_of: Callable[[Iterable[str]], dict[str, str]],
    show: Callable[[dict[str, Row]], None],
    every: float,
    *,
    rounds: int | None = None,
) -> None:
    """Refresh every `every` seconds (forever, or `rounds` times), calling `show` with all rows."""
    view: dict[str, Row] = {}
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        fresh = rows(refresh(), view)
        missing = [run_id for run_id in view if run_id not in fresh and view[run_id].left_at is None]
        left = gone_from_view({k: view[k] for k in missing}, fresh, states_of(missing) if missing else {})
        kept = {k: v for k, v in view.items() if v.left_at is not None and k not in fresh}
        view = {**kept, **left, **fresh}
        show(view)
        done += 1
        if rounds is None or done < rounds:
            time.sleep(max(0.0, every - (time.monotonic() - started)))


def refresher(api: PrefectApi, options: Options, runs: list[str]) -> Callable[[], Report]:
    """One refresh: a scan of every run in Cancelling, or a diagnosis of each run named."""
    from prefect_cancel_doctor.scan.engine import diagnose_run, scan

    def refresh() -> Report:
        if not runs:
            return scan(api, options)
        found = tuple(d for run in runs for d in diagnose_run(api, run, options).runs)
        return Report(api.url, datetime.now(timezone.utc).isoformat(), found)

    return refresh


def states_reader(api: PrefectApi) -> Callable[[Iterable[str]], dict[str, str]]:
    """Run id → its state's name now, for runs that left the scan."""

    def states(ids: Iterable[str]) -> dict[str, str]:
        return {r.id: r.state.name or r.state_type.value for r in api.runs_by_id(ids) if r.state is not None}

    return states


def _call(diagnosis: Diagnosis) -> str:
    call = diagnosis.verdict.blocking_call
    if call is None:
        return "-"
    where = f"{call.filename.rsplit('/', 1)[-1]}:{call.line}" if call.filename else (call.native or "?")
    return f"{call.function} at {where}"


def _sigterm(diagnosis: Diagnosis) -> str:
    processes = diagnosis.target.processes if diagnosis.target else ()
    engine = next((p for p in processes if p.role is Role.ENGINE), None)
    if engine is None or engine.proc is None:
        return "-"
    proc = engine.proc
    if engine.sigterm_pending or procfs.has_signal(proc.sig_pending | proc.shared_pending, _SIGTERM):
        return "pending"
    if procfs.has_signal(proc.sig_ignored, _SIGTERM):
        return "ignored"
    return "handled" if procfs.has_signal(proc.sig_caught, _SIGTERM) else "default"


def _left_at(state: StateType, before: Row | None) -> str | None:
    """When the run was first seen out of Cancelling; an orphan first seen final has no such moment."""
    if state == StateType.CANCELLING or before is None:
        return None
    return before.left_at or datetime.now(timezone.utc).strftime("%H:%M:%S")


__all__ = ["Row", "change_lines", "changes", "gone_from_view", "refresher", "rows", "states_reader", "watch"]
