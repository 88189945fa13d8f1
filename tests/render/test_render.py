"""Renderers at a fixed width: what the on-call reads, and data never read as markup."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

from prefect_cancel_doctor.diagnose.rules import diagnose
from prefect_cancel_doctor.model import Diagnosis, Frame, Report
from prefect_cancel_doctor.render import Format, render
from prefect_cancel_doctor.render.terminal import SHOWN
from tests.diagnose.test_rules import evidence, process, run_ref


def report_of(*diagnoses: Diagnosis) -> Report:
    return Report("http://127.0.0.1:4200/api", "2026-11-27T12:00:00+00:00", diagnoses)


def sleeping(name: str = "brave-otter") -> Diagnosis:
    run = run_ref(name=name)
    ev = evidence(process("sleep_main_native"), run=run)
    return Diagnosis(run, ev.target, diagnose(ev))


def rendered(report: Report, fmt: Format = Format.TERMINAL) -> str:
    out = io.StringIO()
    render(report, fmt, out, color=False)
    return out.getvalue()


def test_table_row_names_run_cause_call_line_and_fix() -> None:
    text = rendered(report_of(sleeping()))
    assert "1 run(s) need attention" in text
    assert "brave-otter" in text and "etl/nightly" in text and "Cancelling 15m" in text
    assert "cancel_not_observed" in text
    assert "sleep_main.py:8" in text
    assert "resolve: stop it, mark it Cancelled" in text  # what to do now; the panel has the lasting fix
    assert "➤  wait_forever" in text  # the blocking frame is marked in the stack
    assert "\x1b[" not in text


def test_a_long_report_details_the_first_runs_and_tallies_the_rest() -> None:
    many = [sleeping(name=f"run-{index:02d}") for index in range(SHOWN + 5)]
    text = rendered(report_of(*many))
    assert f"{SHOWN + 5} run(s) need attention; the first {SHOWN}" in text
    assert f"run-{SHOWN - 1:02d}" in text and f"run-{SHOWN:02d}" not in text
    assert text.count("Evidence") == SHOWN
    assert "… and 5 more run(s): 5 cancel_not_observed." in text


def test_data_is_never_read_as_markup() -> None:
    diagnosis = sleeping(name="etl [prod] [/]")
    call = diagnosis.verdict.blocking_call
    assert call is not None
    weird = dataclasses.replace(
        diagnosis, verdict=dataclasses.replace(diagnosis.verdict, summary="stuck in [bold]x[/bold]")
    )
    text = rendered(report_of(weird))
    assert "etl [prod] [/]" in text
    assert "stuck in [bold]x[/bold]" in text


def test_empty_report_says_nothing_is_stuck() -> None:
    assert "No flow runs stuck in Cancelling" in rendered(report_of())


def test_json_is_the_model_serialized() -> None:
    document = json.loads(rendered(report_of(sleeping()), Format.JSON))
    assert next(iter(document)) == "schema_version"  # first: a reader checks it before anything else
    (entry,) = document["runs"]
    assert set(entry) == {"flow_run", "target", "verdict", "errors", "threads", "timeline", "ui_url"}
    assert entry["threads"][0]["pid"] == entry["target"]["processes"][0]["pid"]
    assert entry["threads"][0]["frames"][0]["function"] == "wait_forever"
    assert entry["verdict"]["cause"] == "cancel_not_observed"
    assert entry["verdict"]["blocking_call"]["kind"] == "sleep"
    process_entry = entry["target"]["processes"][0]
    assert process_entry["role"] == "engine"
    assert process_entry["samples"] == 3 and "threads" not in process_entry  # the latest is the run's


def test_json_keeps_the_latest_sample_of_each_process_unless_asked_for_every_sample() -> None:
    report = report_of(sleeping())
    (process,) = report.runs[0].target.processes  # type: ignore[union-attr]
    assert len(process.dumps) == 3
    latest = json.loads(rendered(report, Format.JSON))
    out = io.StringIO()
    render(report, Format.JSON, out, samples_detail=True)
    detailed = json.loads(out.getvalue())
    (latest_process,) = latest["runs"][0]["target"]["processes"]
    (detailed_process,) = detailed["runs"][0]["target"]["processes"]
    assert "threads" not in latest_process and latest_process["samples"] == 3
    assert len(detailed_process["threads"]) == 3
    flat = [{k: v for k, v in t.items() if k not in ("pid", "role")} for t in latest["runs"][0]["threads"]]
    assert flat == detailed_process["threads"][-1], "the run's flat threads are the latest sample"
    assert len(process.dumps) == 3, "the report itself is not changed"
    # everything but the series is the same document
    del detailed_process["threads"]
    latest_process.pop("samples")
    assert latest == detailed


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_is_one_line_for_scripts_and_indented_on_a_terminal() -> None:
    report = report_of(sleeping())
    piped, terminal = io.StringIO(), _Terminal()
    render(report, Format.JSON, piped)
    render(report, Format.JSON, terminal)
    assert piped.getvalue().count("\n") == 1
    assert terminal.getvalue().startswith('{\n  "schema_version"')
    assert json.loads(piped.getvalue()) == json.loads(terminal.getvalue())


def test_every_format_renders() -> None:
    # The enum is walked and each format is checked for its own shape: a new format fails here until it is.
    report = report_of(sleeping())
    checked = []
    for fmt in Format:
        text = rendered(report, fmt)
        if fmt is Format.JSON:
            (run,) = json.loads(text)["runs"]
            assert run["flow_run"]["name"] == "brave-otter"
            assert run["verdict"]["cause"] == "cancel_not_observed"
            call = run["verdict"]["blocking_call"]
            assert (call["function"], Path(call["filename"]).name, call["line"]) == (
                "time.sleep",
                "sleep_main.py",
                8,
            )
        elif fmt is Format.MARKDOWN:
            assert text.startswith("# Flow runs stuck in Cancelling: 1 need attention\n")
            row = "| brave-otter | etl/nightly | Cancelling 15m | `cancel_not_observed` | `time.sleep` at "
            assert row + "`sleep_main.py:8` |" in text
            assert "\n## brave-otter: `cancel_not_observed`\n" in text
        elif fmt is Format.TERMINAL:
            assert text.startswith("1 run(s) need attention")
            assert "╭─ brave-otter  cancel_not_observed" in text and "sleep_main.py:8" in text
            assert "\x1b[" not in text
        else:
            raise AssertionError(f"no shape checked for the {fmt.value} format")
        checked.append(fmt)
    assert checked == list(Format) and len(checked) == 3


def test_a_secondary_finding_is_shown_after_the_fix_and_in_json() -> None:
    run = run_ref()
    ev = evidence(dataclasses.replace(process("sqlite_busy_native"), sigterm_pending=False), run=run)
    report = report_of(Diagnosis(run, ev.target, diagnose(ev)))
    text = rendered(report)
    assert text.index("Fix") < text.index("Also, once that is fixed") < text.index("signal_pending")
    assert "Once a SIGTERM comes" in text
    document = json.loads(rendered(report, Format.JSON))
    (finding,) = document["runs"][0]["verdict"]["also"]
    assert finding["cause"] == "signal_pending" and finding["also"] == []


def test_the_timeline_is_shown_in_order_with_its_sources() -> None:
    from prefect_cancel_doctor.model import TimelineEntry, TimelineSource

    entries = (
        TimelineEntry(
            "2026-11-27T10:01:00Z", "worker w1 last heartbeat, status OFFLINE", TimelineSource.WORKER
        ),
        TimelineEntry("2026-11-27T10:05:00Z", "entered Cancelling", TimelineSource.STATE),
    )
    text = rendered(report_of(dataclasses.replace(sleeping(), timeline=entries)))
    assert "Timeline (UTC)" in text
    assert text.index("2026-11-27 10:01:00  worker") < text.index(
        "2026-11-27 10:05:00  state    entered Cancelling"
    )


def test_json_stacks_end_at_the_outermost_user_frame_unless_samples_detail() -> None:
    # a flow engine's stack: a library call, the user's frames, then ~30 frames of Prefect's machinery
    lib = "/venv/lib/python3.11/site-packages/prefect/flow_engine.py"
    user = "/app/flows/etl.py"
    engine = (
        Frame("wait", "/usr/lib/python3.11/threading.py", 320),
        Frame("load", user, 12),
        Frame("etl", user, 30),
        *(Frame(f"run_{i}", lib, i) for i in range(30)),
    )
    idle = tuple(Frame(f"loop_{i}", "/usr/lib/python3.11/asyncio/base_events.py", i) for i in range(20))
    d = sleeping()
    (proc,) = d.target.processes  # type: ignore[union-attr]
    main, *_ = proc.dumps[-1]
    threads = (dataclasses.replace(main, frames=engine), dataclasses.replace(main, thread_id=2, frames=idle))
    proc = dataclasses.replace(proc, dumps=(*proc.dumps[:-1], threads))
    d = dataclasses.replace(d, target=dataclasses.replace(d.target, processes=(proc,)))  # type: ignore[arg-type]

    lean = json.loads(rendered(report_of(d), Format.JSON))
    out = io.StringIO()
    render(report_of(d), Format.JSON, out, samples_detail=True)
    full = json.loads(out.getvalue())

    flat = lean["runs"][0]["threads"]
    assert [f["function"] for f in flat[0]["frames"]] == ["wait", "load", "etl"]
    assert flat[0]["frames_omitted"] == 30
    assert len(flat[1]["frames"]) == 5 and flat[1]["frames_omitted"] == 15
    assert "threads" not in lean["runs"][0]["target"]["processes"][0]
    assert (
        len(full["runs"][0]["threads"][0]["frames"]) == 33
        and "frames_omitted" not in full["runs"][0]["threads"][0]
    )


def test_every_absorber_has_words_in_the_terminal_view() -> None:
    from prefect_cancel_doctor.model import Absorber
    from prefect_cancel_doctor.render.text import _ABSORBED

    assert set(_ABSORBED) == set(Absorber)
