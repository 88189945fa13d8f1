"""The on-call view: one table to read in five seconds, then evidence and stacks per run.

Every piece of data goes in as `rich.text.Text`, never as markup, so a run
named "etl [prod]" or a code line holding "[/]" prints as it is.
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from prefect_cancel_doctor.diagnose.classify import is_library, module_of
from prefect_cancel_doctor.durations import age_text as duration
from prefect_cancel_doctor.model import Diagnosis, Report, StateType, TimelineEntry

#: Runs shown in the table and in detail. A fleet with hundreds stuck gets a tally
#: of the rest: a longer page is not read during an incident, and rich takes ~1.5 ms
#: a run to lay it out.
SHOWN = 20

_CAUSE_STYLE = {
    "cancel_not_observed": "yellow",
    "infrastructure_gone": "dim",
    "orphaned_infrastructure": "red",
    "child_process_survives": "red",
    "unknown": "magenta",
}


def console_for(out: TextIO, color: bool | None) -> Console:
    """A rich console on `out` for the doctor's views (the on-call one and the health report's).

    `color` forces colour on or off; None leaves it to NO_COLOR and the terminal.
    Data is never highlighted, long lines are never re-wrapped.
    """
    return Console(
        file=out,
        no_color=None if color is None else not color,
        force_terminal=color,
        highlight=False,
        soft_wrap=False,
    )


def render_terminal(report: Report, out: TextIO, *, color: bool | None = None) -> None:
    """Write the table and the per-run details."""
    console = console_for(out, color)
    if not report.runs:
        console.print(Text("No flow runs stuck in Cancelling and no orphaned processes.", style="green"))
        for error in report.errors:
            console.print(Text(f"error: {error}", style="red"))
        return
    shown = report.runs[:SHOWN]
    console.print(_table(report, shown))
    for diagnosis in shown:
        console.print()
        console.print(_details(diagnosis))
    rest = report.runs[SHOWN:]
    if rest:
        causes = Counter(d.verdict.cause.value for d in rest)
        console.print()
        console.print(
            Text(
                f"… and {len(rest)} more run(s): "
                + ", ".join(f"{n} {cause}" for cause, n in causes.most_common())
                + ". `--format json` lists them all; `diagnose RUN_ID` details one.",
                style="dim",
            )
        )
    for error in report.errors:
        console.print(Text(f"error: {error}", style="red"))


def _table(report: Report, shown: tuple[Diagnosis, ...]) -> Table:
    title = f"{len(report.runs)} run(s) need attention"
    if len(shown) < len(report.runs):
        title += f"; the first {len(shown)} (Cancelling longest first)"
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", title_style="bold")
    table.add_column("Run", overflow="fold", ratio=3)
    table.add_column("Cause", no_wrap=True)
    table.add_column("Blocking call", overflow="fold", ratio=3)
    table.add_column("Fix", overflow="fold", ratio=2)
    for index, d in enumerate(shown):
        if index:
            table.add_row()
        cause = d.verdict.cause.value
        run = Text(d.flow_run.name if d.flow_run else (d.target.description if d.target else "?"))
        run.append(f"\n{_deployment(d)}\n{_state(d)}", style="dim")
        call = d.verdict.blocking_call
        where = Text(call.function if call else "-")
        if call is not None and call.filename:
            where.append(f"\n{call.filename.rsplit('/', 1)[-1]}:{call.line}", style="bold")
        table.add_row(
            run,
            Text(cause, style=_CAUSE_STYLE.get(cause, "bold red")),
            where,
            Text(d.verdict.short_fix),
        )
    return table


def _state(d: Diagnosis) -> str:
    run = d.flow_run
    if run is None:
        return "-"
    if run.state_type == StateType.CANCELLING:
        return f"Cancelling {duration(run.cancelling_for_seconds)}"
    return run.state_name


def _deployment(d: Diagnosis) -> str:
    run = d.flow_run
    if run is None:
        return "-"
    flow = run.flow_name or "?"
    return f"{flow}/{run.deployment_name}" if run.deployment_name else flow


def _details(d: Diagnosis) -> Panel:
    verdict = d.verdict
    run = d.flow_run
    parts: list[Text | Table] = [Text(verdict.summary, style="bold")]
    facts = Text()
    if run is not None:
        facts.append(f"run {run.id}  state {run.state_name}  pool {run.work_pool_name or '-'}")
        if run.infrastructure_pid:
            facts.append(f"  infrastructure_pid {run.infrastructure_pid}")
    if d.target is not None:
        facts.append(f"  target {d.target.description}")
    facts.append(f"  confidence {verdict.confidence:.2f}")
    parts.append(facts)
    if verdict.evidence:
        parts.append(Text("Evidence", style="underline"))
        parts.extend(Text(f"  • {line}") for line in verdict.evidence)
    if d.timeline:
        parts.append(Text("Timeline (UTC)", style="underline"))
        parts.extend(_timeline_line(entry) for entry in d.timeline)
    stack = _stack(d)
    if stack is not None:
        parts.append(Text("Stack of the blocking thread (innermost first)", style="underline"))
        parts.append(stack)
    if verdict.remediation:
        parts.append(Text("Fix", style="underline"))
        parts.extend(Text(f"  → {fix}") for fix in verdict.remediation)
    if verdict.also:
        parts.append(Text("Also, once that is fixed", style="underline"))
        for finding in verdict.also:
            line = Text("  • ")
            line.append(finding.cause.value, style=_CAUSE_STYLE.get(finding.cause.value, "bold red"))
            line.append(f": {finding.summary}")
            parts.append(line)
            parts.extend(Text(f"    → {fix}") for fix in finding.remediation)
    if d.errors:
        parts.extend(Text(f"  ! {e}", style="yellow") for e in d.errors)
    title = Text(run.name if run else "process")
    title.append(f"  {verdict.cause.value}", style=_CAUSE_STYLE.get(verdict.cause.value, "bold red"))
    return Panel(Group(*parts), title=title, title_align="left", box=box.ROUNDED)


def _timeline_line(entry: TimelineEntry) -> Text:
    day, _, clock = entry.at.partition("T")
    line = Text(f"  {day} {clock.rstrip('Z')}  ", style="dim")
    line.append(f"{entry.source:<8} ", style="dim")
    line.append(entry.what)
    return line


def _stack(d: Diagnosis) -> Text | None:
    """The blocking thread's frames, innermost first, down to the outermost user frame."""
    call = d.verdict.blocking_call
    if call is None or d.target is None:
        return None
    process = next((p for p in d.target.processes if p.pid == call.pid and p.dumps), None)
    if process is None:
        return None
    thread = next((t for t in process.dumps[-1] if t.thread_id == call.thread_id), None)
    if thread is None:
        return None
    frames = thread.frames
    user = [i for i, f in enumerate(frames) if not is_library(f.filename)]
    shown = frames[: user[-1] + 1] if user else frames
    text = Text()
    if call.native:
        text.append(f"     [native] {call.native}\n", style="dim")
    for frame in shown:
        marked = frame.filename == call.filename and frame.line == call.line
        text.append("  ➤  " if marked else "     ")
        text.append(f"{frame.function} ({frame.filename}:{frame.line})\n", style="bold" if marked else "")
        if frame.code:
            text.append(f"         {frame.code.strip()}\n", style="cyan" if marked else "dim")
    if len(shown) < len(frames):
        modules = sorted({module_of(f.filename).split(".")[0] for f in frames[len(shown) :]})
        text.append(f"     … {len(frames) - len(shown)} more frame(s) in {', '.join(modules)}\n", style="dim")
    text.rstrip()
    return text
