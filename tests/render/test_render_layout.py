"""The terminal view at 80 and 120 columns: names and call sites are never split mid-word (cut with "…"
where a cell is too narrow, whole in the panel), every duration keeps its unit, timestamps have no
fraction of a second, and the run's UI link is a terminal hyperlink."""

from __future__ import annotations

import dataclasses
import io
import itertools
import re

import pytest
from rich.console import Console

from prefect_cancel_doctor.core.remedies import mark_cancelled_command
from prefect_cancel_doctor.model import (
    BlockingCall,
    CallKind,
    Cause,
    Diagnosis,
    FlowRunRef,
    InfraKind,
    Report,
    StateType,
    Target,
    ThreadSample,
    TimelineEntry,
    TimelineSource,
    Verdict,
)
from prefect_cancel_doctor.render.scan_view import fix_now
from prefect_cancel_doctor.render.terminal import print_report

#: name, flow, deployment, cause, blocking function, file, line, short fix, seconds in Cancelling
RUNS = [
    ("formidable-jaybird", "stuck-database", "demo", Cause.SIGNAL_PENDING, "sqlite3.Cursor.execute",
     "/tmp/pcd-demo-9eugmi4v/flows/stuck_database.py", 27, "timeout on the DB call", 15.2),
    ("visionary-petrel", "stuck-ignored", "demo", Cause.SIGNAL_IGNORED, "time.sleep",
     "/tmp/pcd-demo-9eugmi4v/flows/stuck_ignored.py", 23, "stop ignoring SIGTERM", 185.0),
    ("agate-petrel", "stuck-thread", "demo", Cause.EXIT_BLOCKED_BY_THREAD, "time.sleep",
     "/tmp/pcd-demo-9eugmi4v/flows/stuck_thread.py", 22, "daemon=True / stop the thread", 4000.0),
    ("steel-weasel", "stuck-never-started", "demo", Cause.NEVER_STARTED, None, None, None,
     "start a worker for the pool", 100000.0),
    ("nano-mule", "stuck-orphan", "demo", Cause.ORPHANED_INFRASTRUCTURE, "time.sleep",
     "/tmp/pcd-demo-9eugmi4v/flows/stuck_orphan.py", 21, "kill the process", None),
    ("extraordinarily-long-run-name-of-a-giraffe", "a-very-long-flow-name-for-testing", "production",
     Cause.CANCEL_NOT_OBSERVED, "urllib3.connectionpool.HTTPConnectionPool.urlopen",
     "/opt/app/src/pipelines/extraordinarily_long_module_name.py", 1234,
     "restart the worker; kill -TERM the flow", 59.9),
]  # fmt: skip
DURATION = re.compile(r"^(\d+(\.\d+)?s|\d+m(\d\ds)?|\d+h(\d\dm)?|\d+d(\d+h)?)$")


def diagnosis(index: int) -> Diagnosis:
    name, flow, deployment, cause, function, filename, line, fix, seconds = RUNS[index]
    run_id = f"0b6c9d6e-0000-4000-8000-00000000000{index}"
    state = StateType.CANCELLING if seconds is not None else StateType.CANCELLED
    run = FlowRunRef(
        id=run_id,
        name=name,
        flow_name=flow,
        deployment_name=deployment,
        work_pool_name="pcd-demo",
        state_type=state,
        state_name=state.value.title(),
        state_message=None,
        start_time="2026-11-27T10:00:00.123456Z",
        infrastructure_pid="7252",
        labels={},
        cancelling_for_seconds=seconds,
        cancelling_since="2026-11-27T10:05:00.5Z",
    )
    call = (
        BlockingCall(CallKind.SLEEP, function, filename, line, "time.sleep(3600)", "MainThread", None, False)
        if function
        else None
    )
    where = f"{function} at {filename}:{line}" if call else "nothing"
    verdict = Verdict(
        cause,
        f"The flow is in {where}, so it cannot end.",
        0.85,
        call,
        evidence=(f"MainThread state S in {where} (stable across 5 samples)",),
        remediation=("stop it now: `kill -TERM 7252`", "set a timeout on the call"),
        short_fix=fix,
        stop_now=(
            "kill -TERM 7252",
            *(mark for mark in [mark_cancelled_command(run_id, "7252 killed")] if mark),
        )
        if state == StateType.CANCELLING
        else ("kill -TERM 7252",),
    )
    timeline = (TimelineEntry("2026-11-27T10:05:00Z", "entered Cancelling", TimelineSource.STATE),)
    return Diagnosis(
        run,
        Target(InfraKind.PROCESS, "local process 7252", pid=7252),
        verdict,
        timeline=timeline,
        ui_url=f"http://127.0.0.1:4200/runs/flow-run/{run_id}",
    )


def report() -> Report:
    return Report(
        "http://127.0.0.1:4200/api",
        "2026-11-27T12:00:00.123456+00:00",
        tuple(diagnosis(i) for i in range(len(RUNS))),
    )


def shown(width: int, *, color: bool = False) -> str:
    console = Console(
        width=width, record=True, file=io.StringIO(), color_system="truecolor" if color else None
    )
    print_report(console, report())
    return console.export_text(styles=color)


def _content(line: str) -> str:
    return line.strip().strip("│").strip()


def _keys() -> list[str]:
    keys = []
    for name, flow, deployment, _, function, filename, line, _, _ in RUNS:
        keys += [name, f"{flow}/{deployment}"]
        if function:
            keys += [function, f"{filename.rsplit('/', 1)[-1]}:{line}", f"{filename}:{line}"]
    return keys


@pytest.mark.parametrize("width", [80, 120])
def test_names_and_call_sites_are_never_split_across_lines(width: int) -> None:
    lines = shown(width).splitlines()
    assert max(len(line) for line in lines) <= width
    for key in _keys():
        for upper, lower in itertools.pairwise(lines):
            head, tail = _content(upper), _content(lower)
            for cut in range(2, len(key) - 1):
                # at the end of a wrapped line, or folded inside a table cell
                assert not (head.endswith(key[:cut]) and tail.startswith(key[cut:])), (key, upper, lower)
                folded = key[:cut] in upper.split() and key[cut:] in lower.split()
                assert not folded, (key, upper, lower)


@pytest.mark.parametrize("width", [80, 120])
def test_the_table_shows_each_name_and_call_site_whole_or_cut_with_an_ellipsis(width: int) -> None:
    text = shown(width)
    table = text[: text.index("╭")]
    words = set(table.split())
    for key in _keys():
        if "/" in key and key.startswith("/"):
            continue  # the full path is for the panel
        whole = key in words
        cut = any(
            (w.endswith("…") and key.startswith(w[:-1])) or (w.startswith("…") and key.endswith(w[1:]))
            for w in words
            if len(w) > 2
        )
        assert whole or cut, (key, width)
    # the panel below carries every name whole
    for name, *_ in RUNS:
        assert f"╭─ {name}  " in text


@pytest.mark.parametrize("width", [80, 120])
def test_every_duration_keeps_its_unit(width: int) -> None:
    text = shown(width)
    durations = re.findall(r"(?<!entered )Cancelling(\s+)(\S+)", text)
    assert len(durations) >= 2 * 5  # the table and the panel of each run in Cancelling
    for space, value in durations:
        assert space == " ", "a duration is never wrapped away from its state"
        assert DURATION.match(value), value
    assert "Cancelling 3m05s" in text and "Cancelling 1h06m" in text and "Cancelling 1d3h" in text
    assert "185" not in text and "3.1m" not in text


@pytest.mark.parametrize("width", [80, 120])
def test_timestamps_have_no_fraction_of_a_second(width: int) -> None:
    text = shown(width)
    assert "2026-11-27 10:05:00  state" in text
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", text)


def test_the_fix_has_its_own_column_at_120_and_goes_under_the_cause_at_80() -> None:
    assert "Fix now" in shown(120).splitlines()[2]
    narrow = shown(80)
    assert "Cause, fix now" in narrow.splitlines()[2]
    assert "resolve:" in narrow[: narrow.index("╭")].split()


@pytest.mark.parametrize("width", [80, 120])
def test_the_summary_says_what_to_do_now_and_the_panel_the_lasting_fix(width: int) -> None:
    runs = report().runs
    now = [fix_now(d) for d in runs]
    # the runs in Cancelling: stop them and mark them; the orphan, already Cancelled: only stop it
    assert now == ["resolve: stop it, mark it Cancelled"] * 4 + ["resolve: stop it"] + now[5:]
    text = shown(width)
    table = set(text[: text.index("╭")].split())
    for fix in now:
        assert set(fix.split()) <= table, fix
    # the lasting fixes (a timeout on the DB call, daemon threads) are the panel's, not the summary's
    assert not {"timeout", "daemon=True", "ignoring"} & table
    assert "set a timeout on the call" in text[text.index("╭") :]


def test_the_ui_link_is_a_terminal_hyperlink_and_printed_in_the_panel() -> None:
    console = Console(width=120, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    print_report(console, report())
    output = console.file.getvalue()  # type: ignore[attr-defined]
    url = "http://127.0.0.1:4200/runs/flow-run/0b6c9d6e-0000-4000-8000-000000000000"
    assert "\x1b]8;id=" in output and f";{url}\x1b\\" in output
    assert f"UI {url}" in shown(80)


def test_no_hyperlink_without_a_ui_url() -> None:
    plain = dataclasses.replace(diagnosis(0), ui_url=None)
    console = Console(width=120, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    print_report(console, Report(None, "2026-11-27T12:00:00+00:00", (plain,)))
    assert "\x1b]8;" not in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_short_cause_leaves_the_fix_room_at_80_and_an_inspected_process_has_no_run_lines() -> None:
    inspected = dataclasses.replace(
        diagnosis(0),
        flow_run=None,
        verdict=dataclasses.replace(
            diagnosis(0).verdict, cause=Cause.UNKNOWN, short_fix="read the stacks", stop_now=()
        ),
    )
    console = Console(width=80, record=True, file=io.StringIO())
    print_report(console, Report(None, "2026-11-27T12:00:00+00:00", (inspected,)))
    table = console.export_text().split("╭")[0]
    assert "read the stacks" in table
    assert "  -  " not in table and not re.search(r"^\s+-\s*$", table, re.MULTILINE)


def test_a_long_source_line_in_the_stack_wraps_under_its_frame_not_to_the_panel_edge() -> None:
    from tests.render.test_render import sleeping

    code = "result = connection.execute(" + ", ".join(f"argument_{n}" for n in range(12)) + ")"
    d = sleeping()
    assert d.target is not None
    (engine,) = d.target.processes

    def with_code(thread: ThreadSample) -> ThreadSample:
        return dataclasses.replace(
            thread, frames=tuple(dataclasses.replace(f, code=code) for f in thread.frames)
        )

    dumps = tuple(tuple(map(with_code, dump)) for dump in engine.dumps)
    target = dataclasses.replace(d.target, processes=(dataclasses.replace(engine, dumps=dumps),))
    console = Console(width=80, record=True, file=io.StringIO(), color_system=None)
    print_report(
        console, Report("http://x/api", "2026-11-27T12:00:00Z", (dataclasses.replace(d, target=target),))
    )
    text = console.export_text()
    stack = text[text.index("Stack of the blocking thread") : text.index("│ Fix")].splitlines()[1:]
    assert any("argument_11)" in line for line in stack), stack  # the source line is shown, wrapped
    for line in stack:
        # the marker column holds the marker or nothing: wrapped lines go under the frames' column
        assert line[:2] == "│ " and line[2:7] in ("     ", "  ➤  "), line
