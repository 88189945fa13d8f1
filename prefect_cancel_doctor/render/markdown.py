"""`scan|diagnose|inspect --format markdown`: the report for a ticket or a pull request.

A summary table, then one section per run: the verdict, the blocking call's
file:line and source line, the commands that stop the run now and the fixes
(commands and code in fenced blocks), the evidence, the timeline and the stack,
with a link to the run in the Prefect UI.

Every value from outside (names, paths, code, messages) is escaped or fenced:
a run named "etl | [x](http://evil) `y`" can break no table, make no link and
close no code block.
"""

from __future__ import annotations

import re
from typing import TextIO

from prefect_cancel_doctor.model import Diagnosis, Report
from prefect_cancel_doctor.render.scan_view import (
    Stack,
    blocking_stack,
    call_location,
    call_site,
    deployment_text,
    fixes,
    resolve_command,
    run_name,
    state_text,
)
from prefect_cancel_doctor.render.text import delivery_heading, delivery_lines, timestamp_text

#: Runs detailed in sections; the table lists them all.
DETAILED = 50
#: What Markdown could read as emphasis, code, a link, HTML, a heading, a table border or strikethrough.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#])")
_BACKTICKS = re.compile(r"`+")
#: A code span as the doctor writes one in a sentence: `kill -TERM 42`.
_SPAN = re.compile(r"`([^`]+)`")


def text(value: object) -> str:
    """Plain text: one line, every Markdown character escaped."""
    shown = "-" if value is None or value == "" else str(value)
    return _SPECIAL.sub(r"\\\1", " ".join(shown.split()))


def code(value: object, *, in_table: bool = False) -> str:
    """Inline code that no backtick inside it can close (a longer fence); `|` escaped in a table."""
    shown = " ".join(str(value).split())
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(shown)), default=0) + 1)
    if shown.startswith("`") or shown.endswith("`"):
        shown = f" {shown} "
    if in_table:
        shown = shown.replace("|", "\\|")
    return f"{fence}{shown}{fence}"


def prose(value: object, *, in_table: bool = False) -> str:
    """The doctor's sentences: `code spans` in them stay code (re-fenced), the rest is `text`.

    A backtick with no partner is escaped like any other Markdown character.
    """
    shown = " ".join(str(value).split())
    if not shown:
        return "-"
    parts = []
    last = 0
    for match in _SPAN.finditer(shown):
        parts.append(_SPECIAL.sub(r"\\\1", shown[last : match.start()]))
        parts.append(code(match.group(1), in_table=in_table))
        last = match.end()
    parts.append(_SPECIAL.sub(r"\\\1", shown[last:]))
    return "".join(parts)


def block(lines: list[str], language: str = "") -> list[str]:
    """A fenced code block no line inside it can close."""
    longest = max((len(m) for line in lines for m in _BACKTICKS.findall(line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, *lines, fence]


def link(label: str, url: str | None) -> str:
    """`label` (already escaped) as a link to `url`; the label alone without one.

    Only `links.flow_run_url` URLs come here: http(s), no space, no parenthesis, no angle bracket.
    """
    return f"[{label}]({url})" if url else label


def render_markdown(report: Report, out: TextIO) -> None:
    """Write the report as Markdown."""
    out.write("\n".join(markdown_lines(report)) + "\n")


def markdown_lines(report: Report) -> list[str]:
    """The report, one Markdown line at a time."""
    header = f"Prefect API {code(report.api_url)}" if report.api_url else "No Prefect API (inspect)"
    lines = [
        f"# Flow runs stuck in Cancelling: {len(report.runs)} need attention"
        if report.runs
        else "# No flow runs stuck in Cancelling",
        "",
        f"{header}, {text(timestamp_text(report.generated_at))}.",
    ]
    if not report.runs:
        lines += ["", "No flow runs stuck in Cancelling and no orphaned processes."]
    else:
        lines += ["", *_table(report.runs)]
        for d in report.runs[:DETAILED]:
            lines += ["", *_section(d)]
        rest = len(report.runs) - DETAILED
        if rest > 0:
            lines += ["", f"… and {rest} more run(s); `--format json` details them all."]
    if report.errors:
        lines += ["", "**Errors**", ""]
        lines += [f"- {text(error)}" for error in report.errors]
    return lines


def _table(runs: tuple[Diagnosis, ...]) -> list[str]:
    lines = [
        "| run | flow/deployment | state | cause | blocking call | fix |",
        "|---|---|---|---|---|---|",
    ]
    for d in runs:
        call = d.verdict.blocking_call
        where = call_site(call)
        cells = [
            link(text(run_name(d)), d.ui_url),
            text(deployment_text(d)),
            text(state_text(d)),
            code(d.verdict.cause.value, in_table=True),
            (code(call.function, in_table=True) + (f" at {code(where, in_table=True)}" if where else ""))
            if call
            else "-",
            prose(d.verdict.short_fix, in_table=True),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section(d: Diagnosis) -> list[str]:
    verdict = d.verdict
    run = d.flow_run
    lines = [f"## {text(run_name(d))}: {code(verdict.cause.value)}", ""]
    if d.ui_url:
        lines += [f"Prefect UI: <{d.ui_url}>", ""]
    lines += [f"**{prose(verdict.summary)}** (confidence {verdict.confidence:.2f})", ""]
    facts = []
    if run is not None:
        facts.append(f"- run {code(run.id)}, {text(deployment_text(d))}, {text(state_text(d))}")
        facts.append(
            f"- work pool {code(run.work_pool_name) if run.work_pool_name else '-'}, "
            f"infrastructure_pid {code(run.infrastructure_pid) if run.infrastructure_pid else '-'}"
        )
    if d.target is not None:
        facts.append(f"- target: {text(d.target.description)}")
    call = verdict.blocking_call
    if call is not None:
        where = call_location(call)
        facts.append(
            f"- blocking call: {code(call.function)}"
            + (f" at {code(where)}" if where else "")
            + f" ({call.kind.value}"
            + (f", thread {text(call.thread_name)}" if call.thread_name else "")
            + ("" if call.stable else ", moving between samples")
            + ")"
        )
        if call.resource is not None:
            facts.append(f"- waiting on: {text(call.resource.description)}")
    lines += facts
    if call is not None and call.code:
        lines += ["", *block([call.code.strip()], "python")]
    command = resolve_command(verdict)
    if command is not None:
        lines += ["", "**End it now**, safely (plan, confirm, verify, then the state):", ""]
        lines += block([command], "sh")
    if verdict.stop_now:
        heading = "**Or by hand**" if command is not None else "**Stop it now**"
        lines += ["", f"{heading} (in order, where Prefect is installed and configured):", ""]
        lines += block(list(verdict.stop_now), "sh")
    remaining = fixes(verdict)
    if remaining:
        lines += ["", "**Fix**", ""]
        lines += [f"- {prose(fix)}" for fix in remaining]
    if verdict.also:
        lines += ["", "**Also, once that is fixed**", ""]
        for finding in verdict.also:
            lines.append(f"- {code(finding.cause.value)}: {prose(finding.summary)}")
            lines += [f"  - {prose(fix)}" for fix in finding.remediation]
    if verdict.evidence:
        lines += ["", "**Evidence**", ""]
        lines += [f"- {prose(fact)}" for fact in verdict.evidence]
    delivery = verdict.delivery
    if delivery is not None and (delivery.signs_for or delivery.signs_against or delivery.unread):
        lines += ["", f"**{prose(delivery_heading(delivery))}**", ""]
        lines += [f"- {prose(line)}" for line in delivery_lines(delivery)]
    if d.timeline:
        lines += ["", "**Timeline (UTC)**", ""]
        lines += [
            f"- {text(timestamp_text(e.at, zone=False))} · {text(e.source.value)} · {text(e.what)}"
            for e in d.timeline
        ]
    stack = blocking_stack(d)
    if stack is not None:
        lines += ["", "**Stack of the blocking thread** (innermost first)", "", *block(_stack_lines(stack))]
    if d.errors:
        lines += ["", "**Errors while sampling**", ""]
        lines += [f"- {text(error)}" for error in d.errors]
    return lines


def _stack_lines(stack: Stack) -> list[str]:
    lines = [f"   [native] {stack.native}"] if stack.native else []
    for index, frame in enumerate(stack.frames):
        mark = "➤" if index == stack.marked else " "
        lines.append(f"{mark}  {frame.function} ({frame.filename}:{frame.line})")
        if frame.code:
            lines.append(f"       {frame.code.strip()}")
    if stack.omitted:
        lines.append(f"   … {stack.omitted} more frame(s) in {', '.join(stack.omitted_modules)}")
    return lines


__all__ = ["markdown_lines", "render_markdown"]
