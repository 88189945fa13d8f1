"""`watch`: stuck runs re-diagnosed every few seconds, and the moment each leaves Cancelling.

Each refresh is a cheap scan: one plain (not native) py-spy dump per process and /proc,
so watching costs a target about what one `scan --no-native --samples 1` does (see
bench/watch.py); what located a run is kept until it changes (`scan.memo`). A run that
leaves Cancelling stays in view with its final state, and every time shown of it is the
API's (its state's timestamp), never this host's clock.
On a terminal the view is redrawn (rich `Live`); otherwise one line is printed per change.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prefect_cancel_doctor.clients.prefect_records import parse_time
from prefect_cancel_doctor.model import Cause, Diagnosis, Report, Role, StateType
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.render.watch_view import Change, Row

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.scan.engine import Options

_SIGTERM = 15


@dataclass(frozen=True)
class StateNow:
    """A run's state as the API says now: its name, whether it is Cancelling, and when it began."""

    name: str
    cancelling: bool
    #: The state's timestamp, as the API wrote it (ISO); None where the API gave none.
    at: str | None


def rows(
    report: Report, previous: dict[str, Row], states: dict[str, StateNow] | None = None
) -> dict[str, Row]:
    """The rows of a fresh report, compared with the previous refresh's.

    A run out of Cancelling shows when its state began and how long it was in Cancelling by
    the API's timestamps (`states`, read for it once), never by this host's clock.
    """
    found: dict[str, Row] = {}
    for diagnosis in report.runs:
        run = diagnosis.flow_run
        if run is None:
            continue
        function, site = _call(diagnosis)
        before = previous.get(run.id)
        cancelling = run.state_type == StateType.CANCELLING
        unsampled = diagnosis.verdict.cause is Cause.NOT_ATTACHABLE and cancelling
        if unsampled and before is not None and before.cause != Cause.NOT_ATTACHABLE.value:
            # One failed sample (`resolve` or another doctor attached just then) is no new verdict.
            found[run.id] = dataclasses.replace(
                before, cancelling_for=run.cancelling_for_seconds, change=Change.STALE
            )
            continue
        cause = diagnosis.verdict.cause.value
        row = Row(
            run_id=run.id,
            name=run.name,
            state=run.state_name or run.state_type.value,
            cancelling_for=run.cancelling_for_seconds,
            cause=cause,
            call=function,
            site=site,
            change=_change(before, cause, function, site),
            sigterm=_sigterm(diagnosis),
            cancelling_since=run.cancelling_since,
        )
        if not cancelling:
            now = (states or {}).get(run.id)
            row = _out_of_cancelling(row, now.at if now else None, before)
        found[run.id] = row
    return found


def gone_from_view(
    previous: dict[str, Row], now: dict[str, Row], states: dict[str, StateNow]
) -> dict[str, Row]:
    """Rows of runs no longer in the scan, with their state now as the API says (`states`).

    A run the API still says is Cancelling (or does not answer for) is only not sampled this time.
    """
    kept = {}
    for run_id, row in previous.items():
        if run_id in now:
            continue
        state = states.get(run_id)
        if state is None or state.cancelling:
            kept[run_id] = dataclasses.replace(row, change=Change.STALE)
            continue
        gone = dataclasses.replace(row, state=state.name, change=Change.GONE)
        kept[run_id] = _out_of_cancelling(gone, state.at, row)
    return kept


def changes(previous: dict[str, Row], now: dict[str, Row]) -> list[str]:
    """One line per run that is new, changed cause or call, or left Cancelling."""
    lines = []
    for run_id, row in now.items():
        before = previous.get(run_id)
        if row.change is Change.STALE:
            continue
        if before is None or _seen(before) != _seen(row):
            lines.append(row.line())
    return lines


def change_lines(write: Callable[[str], None]) -> Callable[[dict[str, Row]], None]:
    """A `show` for `watch` off a terminal: each refresh's `changes`, one timestamped line each
    (the time this host printed it, UTC; the times in the line are the API's)."""
    shown: dict[str, Row] = {}

    def show(view: dict[str, Row]) -> None:
        for line in changes(shown, view):
            write(f"{time.strftime('%H:%M:%S', time.gmtime())} {line}")
        shown.clear()
        shown.update(view)

    return show


def watch(
    refresh: Callable[[], Report],
    states_of: Callable[[Iterable[str]], dict[str, StateNow]],
    show: Callable[[dict[str, Row]], None],
    every: float,
    *,
    rounds: int | None = None,
) -> None:
    """Refresh every `every` seconds (forever, or `rounds` times), calling `show` with all rows.

    The API is asked for the state of the runs out of Cancelling whose state's time is not
    known yet, and of the runs that left the scan.
    """
    view: dict[str, Row] = {}
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        report = refresh()
        present = {d.flow_run.id: d.flow_run for d in report.runs if d.flow_run is not None}
        final = [
            run_id
            for run_id, run in present.items()
            if run.state_type != StateType.CANCELLING and not _dated(view.get(run_id))
        ]
        missing = [run_id for run_id, row in view.items() if run_id not in present and not row.left]
        asked = final + missing
        states = states_of(asked) if asked else {}
        fresh = rows(report, view, states)
        left = gone_from_view({k: view[k] for k in missing}, fresh, states)
        kept = {k: v for k, v in view.items() if v.left and k not in fresh}
        view = {**kept, **left, **fresh}
        show(view)
        done += 1
        if rounds is None or done < rounds:
            time.sleep(max(0.0, every - (time.monotonic() - started)))


def refresher(api: PrefectApi, options: Options, runs: list[str]) -> Callable[[], Report]:
    """One refresh: a scan of every run in Cancelling, or a diagnosis of each run named.

    Each keeps what the previous refresh located where nothing of it changed (`scan.memo`)."""
    from prefect_cancel_doctor.scan.engine import diagnose_run, scan
    from prefect_cancel_doctor.scan.memo import Memo

    memo = Memo()
    memos = {run: Memo() for run in runs}

    def refresh() -> Report:
        if not runs:
            return scan(api, options, memo=memo)
        found = tuple(d for run in runs for d in diagnose_run(api, run, options, memo=memos[run]).runs)
        return Report(api.url, datetime.now(timezone.utc).isoformat(), found)

    return refresh


def states_reader(api: PrefectApi) -> Callable[[Iterable[str]], dict[str, StateNow]]:
    """Run id → its state now, as the API says (name, Cancelling or not, its timestamp)."""

    def states(ids: Iterable[str]) -> dict[str, StateNow]:
        return {
            r.id: StateNow(
                r.state.name or r.state_type.value, r.state_type == StateType.CANCELLING, r.state.timestamp
            )
            for r in api.runs_by_id(ids)
            if r.state is not None
        }

    return states


def _call(diagnosis: Diagnosis) -> tuple[str, str]:
    """The blocking call's function and where it is ("etl.py:10", its native frame); "-", "" without one."""
    call = diagnosis.verdict.blocking_call
    if call is None:
        return "-", ""
    where = f"{call.filename.rsplit('/', 1)[-1]}:{call.line}" if call.filename else (call.native or "?")
    return call.function, where


def _change(before: Row | None, cause: str, call: str, site: str) -> Change:
    if before is None:
        return Change.NEW
    if before.cause != cause:
        return Change.CAUSE
    return Change.SAME if (before.call, before.site) == (call, site) else Change.MOVED


def _out_of_cancelling(row: Row, at: str | None, before: Row | None) -> Row:
    """`row` of a run out of Cancelling: since when (the API's `at`, else what an earlier refresh
    read), and how long it was in Cancelling, up to `at` (it no longer counts)."""
    if at is not None:
        since = _clock(at)
        seconds = _between(row.cancelling_since, at)
    elif before is not None and before.left:
        since, seconds = before.since, before.cancelling_for
    else:
        since, seconds = None, None
    return dataclasses.replace(row, left=True, since=since, cancelling_for=seconds)


def _dated(row: Row | None) -> bool:
    """Whether the row is of a run out of Cancelling whose state's time is known."""
    return row is not None and row.left and row.since is not None


def _seen(row: Row) -> tuple[object, ...]:
    """What a change line is printed for: a new cause or call, a run leaving Cancelling."""
    return row.cause, row.call, row.site, row.left, row.state, row.since


def _clock(at: str) -> str | None:
    """An API timestamp as HH:MM:SS, UTC."""
    moment = parse_time(at)
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S") if moment else None


def _between(start: str | None, end: str) -> float | None:
    """Seconds from one API timestamp to another (None where either is unknown)."""
    first, last = parse_time(start), parse_time(end)
    return (last - first).total_seconds() if first and last else None


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


__all__ = [
    "Row",
    "StateNow",
    "change_lines",
    "changes",
    "gone_from_view",
    "refresher",
    "rows",
    "states_reader",
    "watch",
]
