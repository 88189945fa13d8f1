"""`watch`: what changed between two refreshes, runs leaving Cancelling (every time shown is the API's),
and the live table and the piped lines at 80 and 120 columns (names, causes and file:line whole, no word
split)."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterable, Iterator

import pytest
from rich.console import Console

from prefect_cancel_doctor.act.watch import StateNow, change_lines, changes, gone_from_view, rows, watch
from prefect_cancel_doctor.model import BlockingCall, CallKind, Cause, Diagnosis, Report, StateType, Verdict
from prefect_cancel_doctor.render.watch_view import Change, Row, table
from tests.diagnose.test_rules import run_ref

SINCE = "2026-11-30T23:25:00.512000Z"  # when the runs entered Cancelling, by the API
ENDED = "2026-11-30T23:28:41.870000Z"  # the Cancelled state's timestamp, by the API
API_TIMES = {"23:25:00", "23:28:41"}


def _report(line: int, state: str = "CANCELLING") -> Report:
    call = BlockingCall(
        CallKind.SLEEP, "time.sleep", "/srv/flows/etl.py", line, None, "MainThread", None, False
    )
    verdict = Verdict(Cause.CANCEL_NOT_OBSERVED, "summary", 0.9, call, (), ())
    return Report(None, "2026-11-30T00:00:00Z", (Diagnosis(run_ref(state), None, verdict),))


def test_a_call_that_moves_is_marked_and_printed() -> None:
    first = rows(_report(10), {})
    (row,) = first.values()
    assert row.change is Change.NEW and row.blocking == "time.sleep at etl.py:10" and not row.left
    same = rows(_report(10), first)
    assert next(iter(same.values())).change is Change.SAME and changes(first, same) == []
    moved = rows(_report(11), same)
    assert next(iter(moved.values())).change is Change.MOVED
    assert len(changes(same, moved)) == 1


def test_a_run_that_leaves_the_scan_keeps_its_row_with_its_final_state() -> None:
    first = rows(_report(10), {})
    left = gone_from_view(first, {}, {run_id: StateNow("Cancelled", False, ENDED) for run_id in first})
    (row,) = left.values()
    assert row.state == "Cancelled" and row.left and row.since == "23:28:41" and row.change is Change.GONE
    assert "left Cancelling: Cancelled at 23:28:41 UTC" in changes(first, left)[0]


def test_a_run_the_api_still_says_is_cancelling_has_not_left() -> None:
    first = rows(_report(10), {})
    kept = gone_from_view(first, {}, {run_id: StateNow("Cancelling", True, SINCE) for run_id in first})
    (row,) = kept.values()
    assert not row.left and row.change is Change.STALE and changes(first, kept) == []


def test_an_orphan_first_seen_final_shows_its_state_at_the_apis_time() -> None:
    report = _report(10, state="CANCELLED")
    (run_id,) = (d.flow_run.id for d in report.runs if d.flow_run)
    (row,) = rows(report, {}, {run_id: StateNow("Cancelled", False, ENDED)}).values()
    assert row.left and row.state == "Cancelled" and row.since == "23:28:41" and row.sigterm == "-"
    unknown = next(iter(rows(report, {}).values()))
    assert unknown.left and unknown.since is None and unknown.cancelling_for is None


def test_one_failed_sample_keeps_the_last_verdict() -> None:
    first = rows(_report(10), {})
    failed = _report(10)
    diagnosis = failed.runs[0]
    verdict = dataclasses.replace(diagnosis.verdict, cause=Cause.NOT_ATTACHABLE)
    after = rows(dataclasses.replace(failed, runs=(dataclasses.replace(diagnosis, verdict=verdict),)), first)
    (row,) = after.values()
    assert row.change is Change.STALE and row.cause == "cancel_not_observed" and changes(first, after) == []


def test_off_a_terminal_each_change_is_one_timestamped_line_and_nothing_else() -> None:
    written: list[str] = []
    show = change_lines(written.append)
    first = rows(_report(10), {})
    show(first)
    show(rows(_report(10), first))
    assert len(written) == 1
    stamp, line = written[0].split(" ", 1)
    assert len(stamp) == 8 and stamp.count(":") == 2 and line == next(iter(first.values())).line()


# -- runs over several refreshes: every time shown is the API's -------------------------------------------

DB = BlockingCall(
    CallKind.DATABASE, "sqlite3.Cursor.execute", "/tmp/pcd-demo/flows/stuck_database.py", 27, None,
    "MainThread", None, False,
)  # fmt: skip
SLEEP = BlockingCall(
    CallKind.SLEEP, "time.sleep", "/tmp/pcd-demo/flows/stuck_thread.py", 22, None, "MainThread", None, False
)


def diagnosis(
    name: str,
    cause: Cause,
    call: BlockingCall | None,
    state: StateType = StateType.CANCELLING,
    *,
    seconds: float = 185.0,
    index: int = 1,
) -> Diagnosis:
    run = run_ref(
        state.value,
        id=f"0b6c9d6e-0000-4000-8000-00000000000{index}",
        name=name,
        state_name=state.value.title(),
        cancelling_since=SINCE,
        cancelling_for_seconds=seconds,
    )
    return Diagnosis(run, None, Verdict(cause, "summary", 0.9, call))


def watched(
    reports: list[tuple[Diagnosis, ...]], states: dict[str, StateNow]
) -> tuple[list[dict[str, Row]], list[str], list[list[str]]]:
    """`watch` over `reports` (one a refresh); the API's states are `states`. The views shown, the lines
    printed off a terminal, and the run ids the API was asked about at each refresh."""
    pending: Iterator[tuple[Diagnosis, ...]] = iter(reports)
    views: list[dict[str, Row]] = []
    lines: list[str] = []
    asked: list[list[str]] = []
    printed = change_lines(lines.append)

    def states_of(ids: Iterable[str]) -> dict[str, StateNow]:
        asked.append(sorted(ids))
        return {i: states[i] for i in asked[-1] if i in states}

    def show(view: dict[str, Row]) -> None:
        views.append(view)
        printed(view)

    watch(
        lambda: Report(None, "2026-11-30T23:30:00Z", next(pending)), states_of, show, 0.0, rounds=len(reports)
    )
    return views, [line.split(" ", 1)[1] for line in lines], asked


def times_in(text: str) -> set[str]:
    return set(re.findall(r"\b\d\d:\d\d:\d\d\b", text))


def phrase(words: str, text: str) -> bool:
    """Whether `words` show in a column of `text`, on one line or wrapped at their spaces."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        column = line.find(words.split()[0])
        while column >= 0:
            below = [row[column:] for row in lines[index : index + len(words.split())]]
            taken = " ".join(part.split("  ")[0].strip() for part in below)
            if taken.startswith(words):
                return True
            column = line.find(words.split()[0], column + 1)
    return False


def rendered(view: dict[str, Row], width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table(view, width))
    return console.export_text()


def test_a_run_cancelled_before_watch_started_shows_the_apis_time_not_watchs() -> None:
    # An orphan: its run was Cancelled at 23:28:41 (the API); watch starts later, and the scan's
    # cancelling_for_seconds, counted to now, grows with each refresh.
    orphan = diagnosis("nano-mule", Cause.ORPHANED_INFRASTRUCTURE, SLEEP, StateType.CANCELLED, seconds=300.0)
    later = dataclasses.replace(
        orphan,
        flow_run=dataclasses.replace(orphan.flow_run, cancelling_for_seconds=310.0),  # type: ignore[type-var]
    )
    run_id = orphan.flow_run.id  # type: ignore[union-attr]
    views, lines, asked = watched(
        [(orphan,), (later,), (later,)], {run_id: StateNow("Cancelled", False, ENDED)}
    )
    assert asked == [[run_id]]  # once: its time is known after that
    for view in views:
        (row,) = view.values()
        assert row.since == "23:28:41" and row.cancelling_for == pytest.approx(221.358)
        for width in (80, 120):
            text = rendered(view, width)
            assert phrase("Cancelled at 23:28:41", text) and phrase("after 3m41s", text)
            assert times_in(text) <= API_TIMES
    assert lines == [
        f"nano-mule ({run_id[:8]}) left Cancelling: Cancelled at 23:28:41 UTC; orphaned_infrastructure; "
        "time.sleep at stuck_thread.py:22 (first seen); SIGTERM -; in Cancelling 3m41s"
    ]


def test_a_run_that_leaves_while_watched_stops_counting_at_the_apis_time() -> None:
    stuck = diagnosis("visionary-petrel", Cause.SIGNAL_IGNORED, SLEEP, seconds=200.0)
    run_id = stuck.flow_run.id  # type: ignore[union-attr]
    views, lines, asked = watched([(stuck,), (), (), ()], {run_id: StateNow("Cancelled", False, ENDED)})
    assert asked == [[run_id]]  # when it left the scan; then its row is kept as it was
    assert views[0][run_id].where == "Cancelling 3m20s"
    for view in views[1:]:
        row = view[run_id]
        assert row.left and row.state == "Cancelled" and row.since == "23:28:41"
        assert row.cancelling_for == pytest.approx(221.358)  # ENDED - SINCE, not 200 s and counting
        assert row.change is Change.GONE
        for width in (80, 120):
            text = rendered(view, width)
            assert phrase("Cancelled at 23:28:41", text) and phrase("after 3m41s", text)
            assert times_in(text) <= API_TIMES
    assert len(lines) == 2 and "left Cancelling: Cancelled at 23:28:41 UTC" in lines[1]
    assert "(last seen in Cancelling)" in lines[1] and times_in(" ".join(lines)) <= API_TIMES


def test_a_resolved_run_says_its_cause_changed_then_when_the_api_marked_it_cancelled() -> None:
    # resolve beside watch: its SIGTERM makes the verdict another (same call), then the run is marked.
    before = diagnosis("formidable-jaybird", Cause.CANCEL_NOT_OBSERVED, DB)
    signalled = diagnosis("formidable-jaybird", Cause.SIGNAL_PENDING, DB, seconds=190.0)
    run_id = before.flow_run.id  # type: ignore[union-attr]
    views, lines, _ = watched([(before,), (signalled,), ()], {run_id: StateNow("Cancelled", False, ENDED)})
    assert [v[run_id].change for v in views] == [Change.NEW, Change.CAUSE, Change.GONE]
    for width in (80, 120):
        assert phrase("new cause", rendered(views[1], width)) and "same" not in rendered(views[1], width)
    assert "signal_pending; sqlite3.Cursor.execute at stuck_database.py:27 (cause changed)" in lines[1]
    assert views[2][run_id].since == "23:28:41" and phrase("Cancelled at 23:28:41", rendered(views[2], 80))
    assert times_in(" ".join(lines)) <= API_TIMES


# -- the table at 80 and 120 columns ----------------------------------------------------------------------

LONG = BlockingCall(
    CallKind.NETWORK_IO, "urllib3.connectionpool.HTTPConnectionPool.urlopen",
    "/opt/app/src/pipelines/load_warehouse.py", 1234, None, "MainThread", None, False,
)  # fmt: skip


def view() -> dict[str, Row]:
    """Runs as the demo shows them: each cause, a long function, one run that left, one not sampled."""
    first = (
        diagnosis("significant-warthog", Cause.SIGNAL_PENDING, DB, index=1),
        diagnosis("agate-petrel", Cause.EXIT_BLOCKED_BY_THREAD, SLEEP, index=2),
        diagnosis("steel-weasel", Cause.NEVER_STARTED, None, index=3),
        diagnosis("extraordinary-giraffe", Cause.CANCEL_NOT_OBSERVED, LONG, index=4),
        diagnosis("nano-mule", Cause.CANCELLATION_HOOK_HANG, SLEEP, index=5),
    )
    second = (
        first[0],
        dataclasses.replace(first[1], verdict=Verdict(Cause.NOT_ATTACHABLE, "", 0.0)),
        first[2],
        first[3],
    )
    ended = {first[4].flow_run.id: StateNow("Cancelled", False, ENDED)}  # type: ignore[union-attr]
    views, _, _ = watched([first, second], ended)
    return views[-1]


def cell_words(row: Row) -> tuple[set[str], set[str]]:
    """The words that must show whole (names, states, causes, file:line), and the function's."""
    whole = {*row.name.split(), *row.where.split(), row.cause, *row.site.split()}
    return whole, set(row.call.split())


@pytest.mark.parametrize("width", [80, 120])
def test_the_table_fits_and_keeps_names_causes_and_file_lines_whole(width: int) -> None:
    shown = view()
    text = rendered(shown, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    words = set(text.split())
    for row in shown.values():
        whole, functions = cell_words(row)
        assert whole <= words, (whole - words, width)
        for word in functions:  # whole, or cut from its start: "…HTTPConnectionPool.urlopen"
            assert word in words or any(w.startswith("…") and word.endswith(w[1:]) for w in words), word
    for header in ("Run", "Cause", "Blocking", "call"):
        assert header in words
    assert phrase("not sampled", text)  # in the Change column, or under the call where it does not fit


def test_at_80_the_sigterm_column_goes_first_and_at_120_every_column_shows() -> None:
    wide, narrow = rendered(view(), 120), rendered(view(), 80)
    assert "SIGTERM" in wide and "Change" in wide
    assert "SIGTERM" not in narrow
    # the cuts are gone
    for cut in ("sign…", "canc…", "Canc…", "time.…"):
        assert cut not in narrow and cut not in wide
