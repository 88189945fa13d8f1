"""`watch` rows: what changed between two refreshes, and a run leaving Cancelling."""

from __future__ import annotations

import dataclasses

from prefect_cancel_doctor.act.watch import change_lines, changes, gone_from_view, rows
from prefect_cancel_doctor.model import BlockingCall, CallKind, Cause, Diagnosis, Report, Verdict
from tests.diagnose.test_rules import run_ref


def _report(line: int, state: str = "CANCELLING") -> Report:
    call = BlockingCall(
        CallKind.SLEEP, "time.sleep", "/srv/flows/etl.py", line, None, "MainThread", None, False
    )
    verdict = Verdict(Cause.CANCEL_NOT_OBSERVED, "summary", 0.9, call, (), ())
    return Report(None, "2026-11-30T00:00:00Z", (Diagnosis(run_ref(state), None, verdict),))


def test_a_call_that_moves_is_marked_and_printed() -> None:
    first = rows(_report(10), {})
    (row,) = first.values()
    assert row.moved is None and row.call == "time.sleep at etl.py:10" and row.left_at is None
    same = rows(_report(10), first)
    assert next(iter(same.values())).moved is False and changes(first, same) == []
    moved = rows(_report(11), same)
    assert next(iter(moved.values())).moved is True
    assert len(changes(same, moved)) == 1


def test_a_run_that_leaves_the_scan_keeps_its_row_with_its_final_state() -> None:
    first = rows(_report(10), {})
    left = gone_from_view(first, {}, {run_id: "Cancelled" for run_id in first})
    (row,) = left.values()
    assert row.state == "Cancelled" and row.left_at is not None
    assert "left Cancelling at" in changes(first, left)[0]


def test_an_orphan_first_seen_final_did_not_leave_cancelling_here() -> None:
    (row,) = rows(_report(10, state="CANCELLED"), {}).values()
    assert row.left_at is None and row.state == "Cancelled"
    assert dataclasses.replace(row).sigterm == "-"


def test_one_failed_sample_keeps_the_last_verdict() -> None:
    first = rows(_report(10), {})
    failed = _report(10)
    diagnosis = failed.runs[0]
    verdict = dataclasses.replace(diagnosis.verdict, cause=Cause.NOT_ATTACHABLE)
    after = rows(dataclasses.replace(failed, runs=(dataclasses.replace(diagnosis, verdict=verdict),)), first)
    (row,) = after.values()
    assert row.stale and row.cause == "cancel_not_observed" and changes(first, after) == []


def test_off_a_terminal_each_change_is_one_timestamped_line_and_nothing_else() -> None:
    written: list[str] = []
    show = change_lines(written.append)
    first = rows(_report(10), {})
    show(first)
    show(rows(_report(10), first))
    assert len(written) == 1
    stamp, line = written[0].split(" ", 1)
    assert len(stamp) == 8 and stamp.count(":") == 2 and line == next(iter(first.values())).line()
