"""The on-call view: one table to read in five seconds, then evidence and stacks per run.

Every piece of data goes in as `rich.text.Text`, never as markup, so a run
named "etl [prod]" or a code line holding "[/]" prints as it is.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, TextIO

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.style import Style
from rich.table import Table
from rich.text import Text

from prefect_cancel_doctor.model import Diagnosis, Report, TimelineEntry
from prefect_cancel_doctor.render.fit import Cut, cut_word, fill
from prefect_cancel_doctor.render.scan_view import (
    blocking_stack,
    call_site,
    deployment_text,
    fix_now,
    run_name,
    state_text,
)
from prefect_cancel_doctor.render.text import delivery_heading, delivery_lines, timestamp_text

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
    print_report(console_for(out, color), report)


def print_report(console: Console, report: Report) -> None:
    """The table and the per-run details on `console`, laid out for its width."""
    if not report.runs:
        console.print(Text("No flow runs stuck in Cancelling and no orphaned processes.", style="green"))
        for error in report.errors:
            console.print(Text(f"error: {error}", style="red"))
        return
    shown = report.runs[:SHOWN]
    console.print(_table(report, shown, console.width))
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


#: The Cause column holds the fix below the cause when the console is narrower than this.
WIDE = 96
#: The Cause column's header where the fix goes under the cause.
_CAUSE_AND_FIX = "Cause, fix now"
#: Smallest widths of the Run, Blocking call and Fix columns before they share out what is left.
_RUN_MIN, _CALL_MIN, _FIX_MIN = 16, 14, 14
#: A call site longer than this may be cut (with "…"); shorter ones are always shown whole.
_SITE_MAX = 30
#: Widths up to which the Run and Blocking call columns grow before the Fix column does.
_KEY_CAP = (32, 36)


def _table(report: Report, shown: tuple[Diagnosis, ...], width: int) -> Table:
    """The summary: one row per run, laid out for `width` columns.

    Names, flow/deployment and call sites never wrap: a cell too narrow ends
    them with "…" (the panel below has them whole). The Run column is never
    narrower than its "Cancelling 3m05s" lines, nor the Blocking call column
    than its file:line (up to `_SITE_MAX`). The fix is what to do now
    (`scan_view.fix_now`; the panel has the lasting one). Below `WIDE` columns it
    goes under the cause, wrapped, so the names keep their room, and the header
    says so.
    """
    title = f"{len(report.runs)} run(s) need attention"
    if len(shown) < len(report.runs):
        title += f"; the first {len(shown)} (Cancelling longest first)"
    rows = [_row(d) for d in shown]
    causes = max(len("Cause"), *(cell_len(r.cause) for r in rows))
    wide = width >= WIDE
    if not wide:  # the fix wraps under the cause: room for a few words a line, and for the header
        causes = max(causes, len(_CAUSE_AND_FIX), min(_FIX_MIN + 8, max(cell_len(r.fix) for r in rows)))
    columns = 4 if wide else 3
    room = width - (3 * columns + 1) - causes  # padding of 1 each side, box edges and dividers
    run_min = max(_RUN_MIN, *(cell_len(r.state) for r in rows))
    call_min = max(_CALL_MIN, *(min(cell_len(r.site), _SITE_MAX) for r in rows))
    wants = [
        max(len("Run"), *(max(map(cell_len, (r.name, r.deployment, r.state))) for r in rows)),
        max(len("Blocking call"), *(max(cell_len(r.function), cell_len(r.site)) for r in rows)),
    ]
    mins = [min(run_min, wants[0]), min(call_min, wants[1])]
    if wide:
        wants.append(max(_FIX_MIN, *(cell_len(r.fix) for r in rows)))
        mins.append(_FIX_MIN)
    sizes = _share(room, mins, wants)
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", title_style="bold")
    table.add_column("Run", width=sizes[0], no_wrap=True, overflow="ellipsis")
    table.add_column("Cause" if wide else _CAUSE_AND_FIX, width=causes, no_wrap=True)
    table.add_column("Blocking call", width=sizes[1], no_wrap=True, overflow="ellipsis")
    if wide:
        table.add_column("Fix now", width=sizes[2], overflow="fold")
    for index, (d, row) in enumerate(zip(shown, rows, strict=True)):
        if index:
            table.add_row()
        run = Text(row.name, style=Style(link=d.ui_url) if d.ui_url else "")
        if d.flow_run is not None:
            run.append(f"\n{row.deployment}\n{row.state}", style="dim")
        where = Text(row.function)
        if row.site:
            where.append(f"\n{cut_word(row.site, sizes[1], Cut.START)}", style="bold")
        cause = Text(row.cause, style=_CAUSE_STYLE.get(row.cause, "bold red"))
        cells: list[RenderableType] = [run, cause, where]
        if wide:
            cells.append(Text(row.fix))
        else:
            cells[1] = Group(cause, Text(row.fix, style="dim", no_wrap=False, overflow="fold"))
        table.add_row(*cells)
    return table


class _Row(NamedTuple):
    name: str
    deployment: str
    state: str
    cause: str
    function: str
    site: str
    fix: str


def _row(d: Diagnosis) -> _Row:
    call = d.verdict.blocking_call
    return _Row(
        run_name(d),
        deployment_text(d),
        state_text(d),
        d.verdict.cause.value,
        call.function if call else "-",
        call_site(call) or "",
        fix_now(d),
    )


def _share(room: int, mins: list[int], wants: list[int]) -> list[int]:
    """Widths for the Run, Blocking call (and Fix) columns: each at least its `mins` where `room` allows.

    Priority goes to the names: the room over the minimums goes first to Run and
    Blocking call, up to `_KEY_CAP` cells each (evenly, so one long name cannot
    starve the other column), then to the Fix, which wraps; what is still left
    goes to whoever wants more. Too little room: every column shrinks in
    proportion (never below 3).
    """
    if room < sum(mins):
        scale = max(room, 0) / sum(mins)
        return [max(3, int(m * scale)) for m in mins]
    sizes = list(mins)
    spare = room - sum(mins)
    keys = [min(want, cap) for want, cap in zip(wants[:2], _KEY_CAP, strict=True)]
    spare = fill(sizes, keys, spare)
    spare = fill(sizes, [*keys, *wants[2:]], spare)
    fill(sizes, wants, spare)
    return sizes


def _details(d: Diagnosis) -> Panel:
    verdict = d.verdict
    run = d.flow_run
    parts: list[RenderableType] = [Text(verdict.summary, style="bold")]
    if run is not None:
        parts.append(Text(f"run {run.id}  {deployment_text(d)}"))
        facts = Text(f"state {state_text(d)}  pool {run.work_pool_name or '-'}")
        if run.infrastructure_pid:
            facts.append(f"  infrastructure_pid {run.infrastructure_pid}")
        parts.append(facts)
    facts = Text(f"target {d.target.description}  " if d.target is not None else "")
    facts.append(f"confidence {verdict.confidence:.2f}")
    parts.append(facts)
    if d.ui_url:
        # A terminal hyperlink (OSC 8) where the terminal has them; the URL itself everywhere.
        link = Text("UI ", style="dim")
        link.append(d.ui_url, style=Style(link=d.ui_url))
        parts.append(link)
    if verdict.evidence:
        parts.append(Text("Evidence", style="underline"))
        parts.append(_bullets("•", verdict.evidence))
    if verdict.delivery is not None and (
        verdict.delivery.signs_for or verdict.delivery.signs_against or verdict.delivery.unread
    ):
        parts.append(Text(delivery_heading(verdict.delivery), style="underline"))
        parts.append(_bullets("·", delivery_lines(verdict.delivery)))
    if d.timeline:
        parts.append(Text("Timeline (UTC)", style="underline"))
        parts.append(_timeline(d.timeline))
    stack = _stack(d)
    if stack is not None:
        parts.append(Text("Stack of the blocking thread (innermost first)", style="underline"))
        parts.append(stack)
    if verdict.remediation:
        parts.append(Text("Fix", style="underline"))
        parts.append(_bullets("→", verdict.remediation))
    if verdict.also:
        parts.append(Text("Also, once that is fixed", style="underline"))
        for finding in verdict.also:
            line = Text(finding.cause.value, style=_CAUSE_STYLE.get(finding.cause.value, "bold red"))
            line.append(f": {finding.summary}")
            parts.append(_bullets("•", (line,)))
            parts.append(_bullets("→", finding.remediation, indent=4))
    if d.errors:
        parts.append(_bullets("!", d.errors, style="yellow"))
    title = Text(run_name(d))
    title.append(f"  {verdict.cause.value}", style=_CAUSE_STYLE.get(verdict.cause.value, "bold red"))
    return Panel(Group(*parts), title=title, title_align="left", box=box.ROUNDED)


def _bullets(marker: str, lines: tuple[str | Text, ...], *, indent: int = 2, style: str = "") -> Table:
    """One item a line, each wrapped under its own start (a hanging indent), never under the marker."""
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(width=indent + len(marker), justify="right", no_wrap=True)
    grid.add_column(overflow="fold")
    for line in lines:
        grid.add_row(Text(marker, style=style), line if isinstance(line, Text) else Text(line, style=style))
    return grid


def _timeline(entries: tuple[TimelineEntry, ...]) -> Table:
    """One dated fact a line; a long one wraps under its own text, not under the dates."""
    grid = Table.grid()
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column(overflow="fold")
    for entry in entries:
        when = Text(f"  {timestamp_text(entry.at, zone=False)}  ")
        grid.add_row(when, Text(f"{entry.source:<8} "), Text(entry.what))
    return grid


def _stack(d: Diagnosis) -> Table | None:
    """The blocking thread's frames, innermost first, down to the outermost user frame; a long
    frame or source line wraps under its own start, never to the panel's first column."""
    stack = blocking_stack(d)
    if stack is None:
        return None
    grid = Table.grid()
    grid.add_column(width=5, no_wrap=True)
    grid.add_column(overflow="fold")
    if stack.native:
        grid.add_row("", Text(f"[native] {stack.native}", style="dim"))
    for index, frame in enumerate(stack.frames):
        marked = index == stack.marked
        where = Text(f"{frame.function} ({frame.filename}:{frame.line})", style="bold" if marked else "")
        grid.add_row("  ➤  " if marked else "", where)
        if frame.code:
            grid.add_row("", Text(f"    {frame.code.strip()}", style="cyan" if marked else "dim"))
    if stack.omitted:
        modules = ", ".join(stack.omitted_modules)
        grid.add_row("", Text(f"… {stack.omitted} more frame(s) in {modules}", style="dim"))
    return grid
