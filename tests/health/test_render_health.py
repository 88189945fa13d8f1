"""The health report's renderers and rules on a hand-made report: every format, escaping, atomic output."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from collections.abc import Callable
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.diagnose.rules import diagnose
from prefect_cancel_doctor.health.layout import Tone, sections, status_line, status_tone
from prefect_cancel_doctor.health.model import (
    Cancellation,
    DataSource,
    HealthReport,
    OrphanedChild,
    Outcome,
    SlotHold,
    StuckRun,
    Window,
    named,
)
from prefect_cancel_doctor.health.render import render_health, write_health
from prefect_cancel_doctor.health.rules import evaluate, parse_rules
from prefect_cancel_doctor.health.statistics import group_stats, histogram, top_call_sites, top_causes
from prefect_cancel_doctor.model import StateType
from prefect_cancel_doctor.render import HealthFormat
from tests.diagnose.test_rules import evidence, process, run_ref

NASTY = "etl | [prod] <script>alert(1)</script> *x* `y`"


def cancel(
    outcome: Outcome, seconds: float | None, deployment: str = NASTY, name: str = "brave-otter"
) -> Cancellation:
    return Cancellation(
        "c0ffee00-0000-0000-0000-000000000001", name, deployment, "pool [a]", "worker|1",
        "2026-11-27T11:00:00Z", outcome, end_state_name="Cancelled", seconds=seconds,
        end_message="Flow run cancellation timed out; marked this flow run as Cancelled.",
        infrastructure_pid="etl-host-1:4242",
    )  # fmt: skip


def sample(rules: str = "", *, stuck: bool = True, **changes: object) -> HealthReport:
    cancels = [
        cancel(Outcome.CANCELLED, 0.4),
        cancel(Outcome.CANCELLED, 95.0),
        cancel(Outcome.TIMED_OUT, 310.0),
        cancel(Outcome.IGNORED, 12.0, name="late [finisher]"),
        cancel(Outcome.CANCELLING, 900.0),
    ]
    run = run_ref(name="brave-otter [prod]")
    ev = evidence(process("sleep_main_native"), run=run)
    verdict = diagnose(ev)
    stuck_runs = (
        (
            StuckRun(run, "local process 4242", True, ev.target, verdict),
            StuckRun(
                dataclasses.replace(run, id="r2", name="remote-run", infrastructure_pid="gpu-7:99"),
                "process 99 on host gpu-7",
                False,
                note="not sampled (--no-sample): located from the API only",
            ),
        )
        if stuck
        else ()
    )
    fleet = group_stats("fleet", cancels, 60)
    by_deployment = (group_stats(NASTY, cancels, 60),)
    report = HealthReport(
        api_url="http://127.0.0.1:4200/api",
        generated_at="2026-11-27T12:00:00Z",
        window=Window("2026-11-26T12:00:00Z", "2026-11-27T12:00:00Z", 86400, "24h"),
        slow_seconds=60,
        fleet=fleet,
        histogram=histogram(
            [c.seconds for c in cancels if c.outcome is not Outcome.CANCELLING and c.seconds]
        ),
        by_deployment=by_deployment,
        by_work_pool=(group_stats("pool [a]", cancels, 60),),
        by_worker=(group_stats("worker|1", cancels, 60),),
        worst_offenders=by_deployment,
        stuck=stuck_runs,
        live_orphans=(),
        sampled=True,
        top_causes=top_causes(stuck_runs, 10),
        top_call_sites=top_call_sites(stuck_runs, 10),
        suspected_orphans=tuple(c for c in cancels if c.outcome is Outcome.TIMED_OUT),
        ignored_cancels=tuple(c for c in cancels if c.outcome is Outcome.IGNORED),
        orphaned_children=(
            OrphanedChild(
                "k1",
                "child <1>",
                "export/s3",
                "RUNNING",
                "Running",
                "p1",
                "parent",
                "CANCELLED",
                "2026-11-27T11:00:00Z",
            ),
        ),
        slots=(SlotHold("deployment", "limited", 1, 1, 1, ("brave-otter [prod]",), "1/1 slots in use"),),
        rules=(),
        breaches=(),
        source=DataSource("events", 5, 4, 5, 0, 12, 0.4, 604800.0, 300.0, ("a note with | pipe",)),
    )
    rule_set = parse_rules([rules] if rules else [])
    report = dataclasses.replace(report, rules=tuple(r.text for r in rule_set), **changes)  # type: ignore[arg-type]
    return dataclasses.replace(report, breaches=evaluate(rule_set, report))


def rendered(report: HealthReport, fmt: HealthFormat) -> str:
    out = io.StringIO()
    render_health(report, fmt, out, color=False)
    return out.getvalue()


def test_every_format_renders() -> None:
    # The enum is walked and each format is checked for its own shape: a new format fails here until it is
    # (and render_health ends in assert_never).
    report = sample("orphans")
    assert [(run.flow_run.name, run.verdict and run.verdict.cause.value) for run in report.stuck] == [
        ("brave-otter [prod]", "cancel_not_observed"),
        ("remote-run", None),
    ]
    checked = []
    for fmt in HealthFormat:
        text = rendered(report, fmt)
        if fmt is HealthFormat.JSON:
            document = json.loads(text)
            assert document["kind"] == "cancellation_health_report"
            stuck = [
                (run["flow_run"]["name"], (run["verdict"] or {}).get("cause")) for run in document["stuck"]
            ]
            assert stuck == [("brave-otter [prod]", "cancel_not_observed"), ("remote-run", None)]
            assert [breach["rule"] for breach in document["breaches"]] == ["orphans"]
        elif fmt is HealthFormat.MARKDOWN:
            assert text.startswith("# Cancellation health — last 24h\n")
            assert "\n## Stuck in Cancelling now (2)\n" in text
            row = "| brave-otter \\[prod\\] | etl/nightly | pool | 15m | local process 4242 |"
            assert row + " `cancel_not_observed` |" in text
            assert (
                "| remote-run | etl/nightly | pool | 15m | process 99 on host gpu-7 | `not sampled` |" in text
            )
        elif fmt is HealthFormat.HTML:
            assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
            assert "<title>Cancellation health — last 24h</title>" in text
            assert '<section id="stuck"><h2>Stuck in Cancelling now (2)</h2>' in text
            assert '<td class="nowrap">brave-otter [prod]</td>' in text
            assert '<span class="cause">cancel_not_observed</span>' in text
            assert '<td class="nowrap">remote-run</td>' in text
        elif fmt is HealthFormat.TERMINAL:
            assert text.startswith("Cancellation health — last 24h")
            assert "✗ orphans  1 cancel(s) ended by the server's cancelling timeout: brave-otter" in text
            assert "brave-otter [prod]" in text and "remote-run: not sampled" in text
            assert "\x1b[" not in text
        else:
            raise AssertionError(f"no shape checked for the {fmt.value} format")
        checked.append(fmt.value)
    assert checked == ["terminal", "markdown", "html", "json"]


# -- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "breached"),
    [
        ("stuck", True),
        ("stuck-older-than=10m", True),
        ("stuck-older-than=1d", False),
        ("p95-above=4m", True),  # p95 of 0.4, 12, 95, 310 s is 277.75 s
        ("p95-above=5m", False),
        ("max-above=300s", True),
        ("max-above=311s", False),
        ("orphans", True),
        ("ignored", True),
        ("children", True),
        ("slots", True),
    ],
)
def test_each_rule(rule: str, breached: bool) -> None:
    report = sample(rule)
    assert bool(report.breaches) is breached
    if breached:
        (breach,) = report.breaches
        assert breach.rule == rule and breach.message


def test_rules_on_a_quiet_fleet_are_not_breached() -> None:
    quiet = sample(
        "stuck,orphans,ignored,children,slots",
        stuck=False,
        suspected_orphans=(),
        ignored_cancels=(),
        orphaned_children=(),
        slots=(),
    )
    assert quiet.healthy and quiet.rules == ("stuck", "orphans", "ignored", "children", "slots")


# -- formats ---------------------------------------------------------------------------------


def test_json_is_the_model_with_scan_vocabulary_for_stuck_runs() -> None:
    document = json.loads(rendered(sample("orphans"), HealthFormat.JSON))
    assert document["kind"] == "cancellation_health_report" and document["schema_version"] == 1
    assert list(document)[:2] == ["schema_version", "kind"]
    stuck = document["stuck"][0]
    assert {"flow_run", "target", "verdict", "errors", "location", "sampled", "note"} <= set(stuck)
    assert stuck["verdict"]["cause"] == "cancel_not_observed"
    process = stuck["target"]["processes"][0]
    assert process["samples"] >= 1 and "threads" not in process and "threads" not in stuck  # see below
    assert process["proc"]["pid"] and stuck["verdict"]["blocking_call"]["function"] == "time.sleep"
    assert document["stuck"][1]["verdict"] is None and document["stuck"][1]["sampled"] is False
    assert document["breaches"] == [{"rule": "orphans", "message": document["breaches"][0]["message"]}]
    assert document["suspected_orphans"][0]["outcome"] == "timed_out"


def test_json_keeps_summaries_of_sampled_runs_unless_samples_are_asked_for() -> None:
    """Each sampled run's thread stacks (every sample of every process) were most of the document.

    On the seeded test fleet, two sampled runs took 215 KB of 285 KB (indented):
    3 samples of 6 threads each, plus the last sample again, flat.
    """
    sampled = sample().stuck[0]
    assert sampled.target is not None
    engine = sampled.target.processes[0]
    busy = dataclasses.replace(engine, dumps=tuple(engine.dumps[-1] * 6 for _ in range(3)))  # 3 samples
    target = dataclasses.replace(sampled.target, processes=(busy,))
    fleet = tuple(
        dataclasses.replace(
            sampled, flow_run=dataclasses.replace(sampled.flow_run, id=f"r{i}", name=f"r{i}"), target=target
        )
        for i in range(20)
    )
    report = dataclasses.replace(sample(), stuck=fleet, live_orphans=fleet[:1])
    summary = json.dumps(report.to_dict())
    full = report.to_dict(samples=True)
    document = json.loads(summary)
    for entry, whole in zip(document["stuck"], full["stuck"], strict=True):
        assert "threads" not in entry and len(whole["threads"]) == 6 * len(engine.dumps[-1])
        (summarised,) = entry["target"]["processes"]
        (complete,) = whole["target"]["processes"]
        assert summarised["samples"] == len(complete["threads"]) == 3
        assert {k: v for k, v in summarised.items() if k != "samples"} == {
            k: v for k, v in complete.items() if k != "threads"
        }
        assert entry["verdict"] == whole["verdict"] and entry["flow_run"] == whole["flow_run"]
        assert len(json.dumps(entry)) < 6_000 < len(json.dumps(whole)) / 2
    assert len(summary) * 3 < len(json.dumps(full))

    from prefect_cancel_doctor.health.as_json import render_health_json

    out = io.StringIO()
    render_health_json(report, out, samples=True)
    assert json.loads(out.getvalue()) == full
    # `report --samples-detail` asks for them through render_health.
    from prefect_cancel_doctor.health.render import render_health

    detailed = io.StringIO()
    render_health(report, HealthFormat.JSON, detailed, samples_detail=True)
    assert json.loads(detailed.getvalue()) == full


def test_json_lists_fifty_stuck_runs_and_counts_the_rest_unless_all_are_asked_for() -> None:
    template = sample().stuck[1]  # located from the API, not sampled
    fleet = tuple(
        dataclasses.replace(
            template,
            flow_run=dataclasses.replace(
                template.flow_run, id=f"r{i}", name=f"r{i:03d}", cancelling_for_seconds=1000.0 - i
            ),
        )
        for i in range(60)
    )
    report = dataclasses.replace(sample(), stuck=fleet, live_orphans=fleet[:2])
    document = json.loads(rendered(report, HealthFormat.JSON))
    assert [s["flow_run"]["name"] for s in document["stuck"]] == [f"r{i:03d}" for i in range(50)]
    assert document["omitted"] == {"stuck": 10, "live_orphans": 0} and document["listed"] == 50
    assert len(document["live_orphans"]) == 2
    out = io.StringIO()
    render_health(report, HealthFormat.JSON, out, all_runs=True)
    everything = json.loads(out.getvalue())
    assert len(everything["stuck"]) == 60 and everything["omitted"]["stuck"] == 0
    assert everything["listed"] is None
    # What is counted does not depend on what is listed.
    assert {k: v for k, v in everything.items() if k not in ("stuck", "omitted", "listed")} == {
        k: v for k, v in document.items() if k not in ("stuck", "omitted", "listed")
    }
    assert json.loads(json.dumps(report.to_dict(listed=0)))["omitted"]["stuck"] == 60


def test_markdown_escapes_data_and_keeps_tables_intact() -> None:
    md = rendered(sample("orphans"), HealthFormat.MARKDOWN)
    assert "<script>" not in md and "\\<script\\>" in md
    assert "etl \\| \\[prod\\]" in md
    assert "❌ `orphans`" in md
    for line in md.splitlines():
        if line.startswith("| ") and "etl" in line:
            assert line.count(" | ") - line.count("\\| ") >= 3


def test_html_escapes_data_and_loads_nothing() -> None:
    page = rendered(sample("orphans"), HealthFormat.HTML)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    class Tags(HTMLParser):
        found: ClassVar[list[str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found.append(tag)
            assert not any(name in ("src", "href") for name, _ in attrs), (tag, attrs)

    parser = Tags()
    parser.feed(page)
    assert "script" not in parser.found and parser.found.count("svg") == 3


def test_terminal_shows_data_verbatim() -> None:
    text = rendered(sample("orphans"), HealthFormat.TERMINAL)
    assert "brave-otter [prod]" in text  # not eaten as rich markup
    assert "✗ orphans" in text
    assert "\x1b[" not in text


#: Each table section's list in the JSON document, and what of an entry one of its row's cells shows.
IN_JSON: dict[str, tuple[str, Callable[[Any], object]]] = {
    "time-to-cancel": ("histogram", lambda e: e["label"]),
    "stuck": ("stuck", lambda e: e["flow_run"]["name"]),
    "live-orphans": ("live_orphans", lambda e: e["flow_run"]["name"]),
    "causes": ("top_causes", lambda e: e["value"]),
    "call-sites": ("top_call_sites", lambda e: e["function"]),
    "offenders": ("worst_offenders", lambda e: e["name"]),
    "by-deployment": ("by_deployment", lambda e: e["name"]),
    "by-work-pool": ("by_work_pool", lambda e: e["name"]),
    "by-worker": ("by_worker", lambda e: e["name"]),
    "suspected-orphans": ("suspected_orphans", lambda e: e["flow_run_name"]),
    "ignored": ("ignored_cancels", lambda e: e["flow_run_name"]),
    "children": ("orphaned_children", lambda e: e["flow_run_name"]),
    "slots": ("slots", lambda e: e["name"]),
}


def test_every_format_shows_the_same_sections_and_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """One list of sections behind the terminal, Markdown and HTML views; JSON holds the same rows."""
    monkeypatch.setenv("COLUMNS", "400")  # the terminal view wraps no cell
    report = dataclasses.replace(sample("orphans"), top=1, live_orphans=sample().stuck[:1])
    parts = sections(report)
    terminal = rendered(report, HealthFormat.TERMINAL)
    markdown = re.sub(r"\\(.)", r"\1", rendered(report, HealthFormat.MARKDOWN))  # escapes undone
    page = rendered(report, HealthFormat.HTML)
    text = unescape(page)
    document = json.loads(rendered(report, HealthFormat.JSON))
    assert {p.key for p in parts} >= {"summary", "stuck", "live-orphans", "causes", "slots", "source"}
    for part in parts:
        assert part.title in terminal and f"## {part.title}" in markdown, part.title
        assert f'id="{part.key}"' in page, part.key
        for value in [v for row in part.rows for v in row] + list(part.notes):
            assert value in terminal and value in markdown, (part.key, value)
            assert part.charts or value in text, (part.key, value)  # a chart draws the table in HTML
        for chart in part.charts:
            assert f'id="chart-{chart.key}"' in page
        if part.key in IN_JSON:
            key, shown = IN_JSON[part.key]
            entries = document[key]
            assert len(part.rows) == (len(entries) if key == "histogram" else min(len(entries), 1)), part.key
            for entry, row in zip(entries[: len(part.rows)], part.rows, strict=True):
                assert str(shown(entry)) in " ".join(row), (part.key, row)
    summary = parts[0].rows[0]
    fleet = document["fleet"]
    counts = ("requested", "cancelled", "timed_out", "ignored")
    figures = [*(fleet[k] for k in counts), len(document["stuck"])]
    assert list(summary[:5]) == [str(n) for n in figures]
    assert summary[5:] == tuple(seconds_text(fleet["time_to_cancel"][q]) for q in ("p50", "p95", "max"))
    assert "… and 1 more" in terminal and "… and 1 more" in markdown and "… and 1 more" in text


def test_seconds_text() -> None:
    assert [seconds_text(v) for v in (None, 0.42, 7.46, 45, 610, 300, 3600, 7380, 86400, 93600)] == [
        "–", "0.42s", "7.5s", "45s", "10m", "5m00s", "1h", "2h03m", "1d", "1d2h",
    ]  # fmt: skip


# -- --output ---------------------------------------------------------------------------------


def test_output_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("previous report")
    write_health(sample(), HealthFormat.HTML, target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"


def test_a_failed_render_leaves_the_previous_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.md"
    target.write_text("previous report")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        write_health(sample(), HealthFormat.MARKDOWN, target)
    assert target.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


# -- what the report says about the runs it counts --------------------------------------------


def many_stuck(count: int) -> tuple[StuckRun, ...]:
    """`count` runs in Cancelling, none sampled (as with --no-sample), longest first."""
    remote = sample().stuck[1]
    return tuple(
        dataclasses.replace(
            remote,
            flow_run=dataclasses.replace(
                remote.flow_run, id=f"r{i}", name=f"run-{i}", cancelling_for_seconds=3600.0 - i
            ),
        )
        for i in range(count)
    )


def test_named_shows_a_few_names_then_how_many_more() -> None:
    assert named([]) == ""
    assert named(["a", "b"]) == "a, b"
    assert named(["a", "b", "c"]) == "a, b, c"
    assert named(["a", "b", "a", "c", "d", "e"]) == "a, b, c and 2 more"  # each run once


@pytest.mark.parametrize(
    ("rule", "runs"),
    [
        ("stuck", ["brave-otter [prod]", "remote-run"]),
        ("stuck-older-than=10m", ["brave-otter [prod]", "remote-run"]),
        ("orphans", ["brave-otter"]),
        ("ignored", ["late [finisher]"]),
        ("children", ["child <1>"]),
        ("slots", ["brave-otter [prod]"]),
    ],
)
def test_a_breach_that_counts_runs_names_them(rule: str, runs: list[str]) -> None:
    (breach,) = sample(rule).breaches
    for run in runs:
        assert run in breach.message, (rule, breach.message)


def test_a_breach_names_a_few_runs_and_counts_the_rest() -> None:
    rules = parse_rules(["stuck,stuck-older-than=10m"])
    stuck, older = (b.message for b in evaluate(rules, dataclasses.replace(sample(), stuck=many_stuck(7))))
    assert stuck == "7 run(s) stuck in Cancelling: run-0, run-1, run-2 and 4 more"
    assert older.startswith("7 run(s) in Cancelling for longer than 10.0m (oldest 60.0m)")
    assert older.endswith(": run-0, run-1, run-2 and 4 more")


def test_notes_name_the_runs_they_speak_of() -> None:
    parts = {p.key: p for p in sections(dataclasses.replace(sample("orphans"), stuck=many_stuck(5)))}
    (unsampled,) = parts["stuck"].notes
    assert unsampled == "run-0, run-1, run-2 and 2 more: not sampled (--no-sample): located from the API only"
    (orphans,) = parts["suspected-orphans"].notes
    assert "(brave-otter)" in orphans and "check their infrastructure" in orphans


# -- the status line ---------------------------------------------------------------------------


def quiet(rules: str = "") -> HealthReport:
    """Cancels that all ended in time: nothing stuck, orphaned, ignored or left behind."""
    return sample(
        rules, stuck=False, suspected_orphans=(), ignored_cancels=(), orphaned_children=(), slots=()
    )


def status_of(report: HealthReport, fmt: HealthFormat) -> str:
    out = io.StringIO()
    render_health(report, fmt, out, color=True)
    lines = out.getvalue().splitlines()
    if fmt is HealthFormat.HTML:
        return re.search(r'<div class="status[^>]*>', out.getvalue())[0]  # type: ignore[index]
    return next(line for line in lines if "rule" in line)


GREEN, YELLOW, RED = "\x1b[1;32m", "\x1b[1;33m", "\x1b[1;31m"


def test_without_rules_stuck_runs_are_not_shown_as_all_well() -> None:
    report = sample()  # no --fail-on, two runs stuck, an orphan
    assert status_tone(report) is Tone.WARN
    assert status_line(report) == (
        "no --fail-on rules given; found 2 run(s) stuck in Cancelling, 1 suspected orphan(s), "
        "1 ignored cancel(s), 1 sub-deployment run(s) outliving their cancelled parent"
    )
    terminal = status_of(report, HealthFormat.TERMINAL)
    assert GREEN not in terminal and YELLOW in terminal
    assert status_of(report, HealthFormat.HTML) == '<div class="status warn" id="status">'
    assert status_of(report, HealthFormat.MARKDOWN).startswith("⚠️ **No --fail-on rules given; found 2 run(s)")


def test_orphans_alone_make_the_status_a_warning() -> None:
    orphaned = dataclasses.replace(quiet(), suspected_orphans=sample().suspected_orphans)
    assert status_tone(orphaned) is Tone.WARN and "1 suspected orphan(s)" in status_line(orphaned)
    assert GREEN not in status_of(orphaned, HealthFormat.TERMINAL)


def test_an_orphan_timed_out_and_found_running_counts_once() -> None:
    report = sample()
    (timed_out,) = report.suspected_orphans
    running = dataclasses.replace(
        report.stuck[0], flow_run=dataclasses.replace(report.stuck[0].flow_run, id=timed_out.flow_run_id)
    )
    other = dataclasses.replace(
        report.stuck[1],
        flow_run=dataclasses.replace(report.stuck[1].flow_run, state_type=StateType.CANCELLED),
    )
    both = dataclasses.replace(report, live_orphans=(running, other))
    # the timed-out run found running here is one orphan; the other live orphan a second
    assert "2 suspected orphan(s)" in status_line(both)


def test_run_names_link_to_their_pages_in_html_and_markdown() -> None:
    report = sample(ui_url="http://127.0.0.1:4200")
    stuck_page = "http://127.0.0.1:4200/runs/flow-run/0b6c9d6e-0000-4000-8000-000000000001"
    timed_out_page = "http://127.0.0.1:4200/runs/flow-run/c0ffee00-0000-0000-0000-000000000001"
    html = rendered(report, HealthFormat.HTML)
    markdown = rendered(report, HealthFormat.MARKDOWN)
    assert f'<a href="{stuck_page}">brave-otter [prod]</a>' in html
    assert f'<a href="{timed_out_page}">brave-otter</a>' in html
    assert f"[brave-otter \\[prod\\]]({stuck_page})" in markdown
    assert f"[brave-otter]({timed_out_page})" in markdown
    # a run whose id is no UUID ("r2") and a report without a UI get no link
    assert "remote-run</a>" not in html
    assert "href" not in rendered(sample(), HealthFormat.HTML).split("<body")[1].split("<svg")[0]


def test_green_only_when_rules_were_checked_and_hold() -> None:
    nothing = quiet()
    assert status_tone(nothing) is Tone.NEUTRAL and status_line(nothing) == "no --fail-on rules given"
    assert GREEN not in status_of(nothing, HealthFormat.TERMINAL)
    assert status_of(nothing, HealthFormat.HTML) == '<div class="status neutral" id="status">'
    assert status_of(nothing, HealthFormat.MARKDOWN) == "**No --fail-on rules given.**"

    healthy = sample("p95-above=1h")  # runs are stuck, but the rules given hold
    assert status_tone(healthy) is Tone.OK
    assert GREEN in status_of(healthy, HealthFormat.TERMINAL)
    assert status_of(healthy, HealthFormat.HTML) == '<div class="status ok" id="status">'

    breached = sample("stuck")
    assert status_tone(breached) is Tone.BAD and RED in status_of(breached, HealthFormat.TERMINAL)
    assert status_of(breached, HealthFormat.HTML) == '<div class="status bad" id="status">'


# -- empty sections --------------------------------------------------------------------------


def test_empty_sections_say_none_on_one_line_in_every_format() -> None:
    report = quiet()
    empty = [p for p in sections(report) if p.is_empty]
    assert {p.key for p in empty} == {"stuck", "suspected-orphans", "ignored", "children", "slots"}
    assert all(p.empty == "none" and "(0)" not in p.title for p in empty)

    terminal = rendered(report, HealthFormat.TERMINAL).splitlines()
    markdown = rendered(report, HealthFormat.MARKDOWN).splitlines()
    page = rendered(report, HealthFormat.HTML)
    for part in empty:
        line = f"{part.title}: none"
        (at,) = [i for i, text in enumerate(terminal) if text.startswith(line)]
        assert terminal[at] == line and not terminal[at + 1].startswith(" "), terminal[at : at + 3]
        (at,) = [i for i, text in enumerate(markdown) if text.startswith(f"## {part.title}")]
        assert markdown[at] == f"## {line}" and not markdown[at + 1].startswith("|")
        html = re.search(rf'<section id="{part.key}"[^>]*>(.*?)</section>', page, re.S)
        assert html is not None and "<table" not in html[1] and ": <span" in html[1]
        assert unescape(re.sub(r"<[^>]+>", "", html[1])) == line
    # One Markdown table per section with rows, none for the empty ones.
    tables = sum(1 for text in markdown if re.fullmatch(r"\|(?:-{3}:?\|)+", text))
    assert tables == sum(1 for p in sections(report) if p.rows)


def test_a_window_without_an_ended_cancel_draws_no_empty_histogram() -> None:
    report = dataclasses.replace(
        quiet(),
        fleet=group_stats("fleet", [cancel(Outcome.CANCELLING, None)], 60),
        histogram=histogram([]),
        by_deployment=(group_stats("etl/nightly", [cancel(Outcome.CANCELLING, None)], 60),),
    )
    part = next(p for p in sections(report) if p.key == "time-to-cancel")
    assert part.is_empty and not part.rows
    assert f"{part.title}: {part.empty}" == "Time to cancel: none ended in the window"
    assert [c.key for c in part.charts] == ["outcomes"]  # nothing to draw in the histogram or latencies
    assert "## Time to cancel: none ended in the window" in rendered(report, HealthFormat.MARKDOWN)


# -- the HTML report's charts ----------------------------------------------------------------


def figure(page: str, key: str) -> str:
    found = re.search(rf'<figure id="chart-{key}".*?</figure>', page, re.S)
    assert found is not None, key
    return found[0]


def axis_numbers(svg: str) -> list[str]:
    """The numbers written along a chart's axes (pygal puts each axis label in a 'guides' group)."""
    guides = re.findall(r'<g class="guides">(.*?)</g>', svg, re.S)
    texts = [unescape(t) for g in guides for t in re.findall(r"<text[^>]*>([^<]*)</text>", g)]
    return [t for t in texts if re.fullmatch(r"\d+(\.\d+)?", t)]


@pytest.mark.parametrize("cancels", [1, 3, 7, 40, 177])
def test_count_axes_have_whole_number_ticks(cancels: int) -> None:
    """A count axis reads 0, 1, 2 … (never 0.5 cancels), however small or large the counts."""
    many = [cancel(Outcome.CANCELLED, 2.0)] * cancels
    groups = (group_stats("etl/nightly", many, 60),)
    report = dataclasses.replace(
        quiet(), histogram=histogram([2.0] * cancels), by_deployment=groups, fleet=groups[0]
    )
    page = rendered(report, HealthFormat.HTML)
    for key in ("time-to-cancel", "outcomes"):
        numbers = axis_numbers(figure(page, key))
        assert len(numbers) >= 2, (key, numbers)
        assert all(n.isdigit() for n in numbers), (key, numbers)
        assert numbers[0] == "0" and int(numbers[-1]) >= cancels, (key, numbers)
        assert len(numbers) <= 7, (key, numbers)


def test_legends_are_html_below_the_chart_never_clipped() -> None:
    page = rendered(sample(), HealthFormat.HTML)
    outcomes = figure(page, "outcomes")
    assert 'class="legends"' not in outcomes  # pygal's legend: a fixed width per entry, names cut
    items = re.findall(r"<li>.*?</li>", outcomes)
    names = [re.sub(r"<[^>]+>", "", item) for item in items]
    assert names == ["cancelled", "slow", "timed out", "ignored", "still cancelling"]
    assert re.findall(r"<li>", figure(page, "latency")) and not re.findall(
        r"<li>", figure(page, "time-to-cancel")
    )


def test_the_latency_axis_starts_below_the_shortest_bar() -> None:
    from prefect_cancel_doctor.health.html import _log_ticks

    ticks = _log_ticks([0.12, 94.0, 105.0])
    assert ticks[0] <= 0.12 / 3 and ticks[-1] >= 105.0
    assert ticks == [0.01, 0.1, 1.0, 10.0, 60.0, 300.0]


def test_short_cells_do_not_wrap_and_long_ones_may() -> None:
    """At 1280 px the widest columns squeezed the others: 'stuck-sleep/demo' broke at its hyphen,
    'time.sleep (stuck_sleep.py:20)' between 2 and 0. Short cells keep to one line; long ones wrap."""
    page = rendered(sample(), HealthFormat.HTML)
    cells = dict(
        (unescape(re.sub(r"<[^>]+>", "", inner)), attrs)
        for attrs, inner in re.findall(r"<td([^>]*)>(.*?)</td>", page, re.S)
    )
    assert "nowrap" in cells["time.sleep (sleep_main.py:8)"]  # a call site, in code
    assert "nowrap" in cells["brave-otter [prod]"] and "nowrap" in cells["process 99 on host gpu-7"]
    assert cells["15m"] == ' class="num nowrap"'
    assert "nowrap" not in cells[NASTY]  # 47 characters: it may wrap rather than widen the table
