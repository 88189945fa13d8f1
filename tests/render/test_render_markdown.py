"""`--format markdown` for scan, diagnose and inspect: one section per run, for a ticket; nothing from
outside can break a table, make a link or close a code block."""

from __future__ import annotations

import dataclasses
import re

from prefect_cancel_doctor.model import Diagnosis, Report
from prefect_cancel_doctor.render import Format
from tests.render.test_render import rendered, report_of, sleeping

RUN_ID = "0b6c9d6e-0000-4000-8000-000000000001"
UI = f"http://127.0.0.1:4200/runs/flow-run/{RUN_ID}"


def markdown(*diagnoses: Diagnosis) -> str:
    return rendered(report_of(*diagnoses), Format.MARKDOWN)


def linked(name: str = "brave-otter") -> Diagnosis:
    return dataclasses.replace(sleeping(name), ui_url=UI)


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_one_section_per_run_with_verdict_fix_stop_commands_call_site_and_link() -> None:
    first = linked()
    coded = (*first.verdict.remediation, "run it under `prefect flow-run execute`")
    first = dataclasses.replace(first, verdict=dataclasses.replace(first.verdict, remediation=coded))
    text = markdown(first, linked("quiet-heron"))
    assert text.startswith("# Flow runs stuck in Cancelling: 2 need attention\n")
    assert "2026-11-27 12:00:00 UTC" in text
    assert f"| [brave-otter]({UI}) | etl/nightly | Cancelling 15m | `cancel_not_observed` |" in text
    assert "`time.sleep` at `sleep_main.py:8`" in text
    sections = text.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "brave-otter: `cancel_not_observed`",
        "quiet-heron: `cancel_not_observed`",
    ]
    section = sections[0]
    assert f"Prefect UI: <{UI}>" in section
    assert re.search(r"- blocking call: `time\.sleep` at `/\S+/sleep_main\.py:8` \(sleep", section)
    end = section[section.index("**End it now**") : section.index("**Or by hand**")]
    assert "```sh\nprefect-cancel-doctor resolve brave-otter\n```" in end  # the first fix: the doctor's own
    stop = section[section.index("**Or by hand**") :]
    commands = stop[stop.index("```sh\n") + 6 : stop.index("\n```", stop.index("```sh"))].splitlines()
    assert commands == list(sleeping().verdict.stop_now)
    fix = section[section.index("**Fix**") :]
    assert "- set PREFECT\\_RUNNER\\_CRASH\\_ON\\_CANCELLATION\\_FAILURE=true" in fix
    assert "`prefect flow-run execute`" in fix  # the doctor's code spans stay code
    assert "or by hand" not in fix and "end it now" not in fix  # the commands are in their own blocks
    assert "**Evidence**" in section and "**Stack of the blocking thread**" in section
    assert "➤  wait_forever (" in section


def test_the_table_has_one_cell_per_column_whatever_the_names() -> None:
    hostile = "etl | [click](http://evil) `x` <b>\\"
    text = markdown(linked(hostile))
    header, _rule, row = (line for line in text.splitlines() if line.startswith("|"))
    assert _unescaped_pipes(row) == _unescaped_pipes(header) == 7
    assert "[click](http://evil)" not in text.replace("\\[click\\](http://evil)", "")
    assert "<b>" not in text.replace("\\<b\\>", "")
    assert "## etl \\| \\[click\\](http://evil) \\`x\\` \\<b\\>\\\\: `cancel_not_observed`" in text


def test_a_code_line_with_backticks_cannot_close_its_block() -> None:
    d = linked()
    call = d.verdict.blocking_call
    assert call is not None
    sneaky = dataclasses.replace(call, code='x = "```"  # then [a](http://evil)')
    text = markdown(dataclasses.replace(d, verdict=dataclasses.replace(d.verdict, blocking_call=sneaky)))
    assert '````python\nx = "```"  # then [a](http://evil)\n````' in text


def test_no_link_without_a_ui_url() -> None:
    text = markdown(sleeping())
    assert "](" not in text and "Prefect UI:" not in text
    assert "| brave-otter | etl/nightly |" in text


def test_durations_and_timestamps_read_one_way() -> None:
    d = dataclasses.replace(
        linked(),
        flow_run=dataclasses.replace(linked().flow_run, cancelling_for_seconds=185.4),  # type: ignore[type-var]
    )
    report = Report("http://127.0.0.1:4200/api", "2026-11-27T12:00:00.654321+00:00", (d,))
    text = rendered(report, Format.MARKDOWN)
    assert "Cancelling 3m05s" in text
    assert ".654321" not in text and "12:00:00 UTC" in text


def test_an_inspected_process_and_an_empty_report() -> None:
    inspected = dataclasses.replace(sleeping(), flow_run=None)
    text = rendered(Report(None, "2026-11-27T12:00:00+00:00", (inspected,)), Format.MARKDOWN)
    assert "No Prefect API (inspect)" in text and "## test: `cancel_not_observed`" in text
    empty = rendered(report_of(), Format.MARKDOWN)
    assert empty.startswith("# No flow runs stuck in Cancelling")
