"""The health report in a terminal (rich): title and status, then each section as a table.

Every piece of data goes in as `rich.text.Text`, never as markup. Each table fits the
terminal's width (`render.fit`): no word is split; the columns that matter least go first
(`Column.drop`), names, causes and dates are never cut, and a call site is shortened only
from its start, keeping its file:line.
"""

from __future__ import annotations

from typing import Literal, TextIO

from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from prefect_cancel_doctor.health.layout import (
    Column,
    Section,
    Style,
    Tone,
    page_title,
    sections,
    status_line,
    status_tone,
    window_text,
)
from prefect_cancel_doctor.health.model import HealthReport
from prefect_cancel_doctor.render import fit
from prefect_cancel_doctor.render.terminal import console_for

_STYLES = {Style.CAUSE: "yellow", Style.BAR: "cyan"}
#: The status line's style: green only when rules were checked and hold.
_TONES = {Tone.BAD: "bold red", Tone.OK: "bold green", Tone.WARN: "bold yellow", Tone.NEUTRAL: "bold"}


def render_health_terminal(report: HealthReport, out: TextIO, *, color: bool | None = None) -> None:
    """Write the report for a terminal."""
    print_health(console_for(out, color), report)


def print_health(console: Console, report: HealthReport) -> None:
    """The report on `console`, each table fitted to its width."""
    title = Text(page_title(report), style="bold")
    title.append(f"   {window_text(report)}   {report.api_url or ''}", style="dim")
    console.print(title)
    console.print(Text(status_line(report), style=_TONES[status_tone(report)]))
    for breach in report.breaches:
        line = Text("  ✗ ", style="red")
        line.append(breach.rule, style="bold")
        line.append(f"  {breach.message}")
        console.print(line)
    for section in sections(report):
        _print(console, section)


def _print(console: Console, section: Section) -> None:
    title = Text(section.title, style="bold")
    if section.is_empty:
        console.print(title.append(f": {section.empty}", style="dim"))
    elif section.rows:
        columns = [fitted(column) for column in section.columns]
        console.print(fit.table(columns, section.rows, console.width, title=title))
    else:
        console.print(title)
    for note in section.notes:
        console.print(Padding(Text(note, style="dim"), (0, 0, 0, 2)))


def fitted(column: Column) -> fit.Column:
    """A column of the report in a terminal: numbers, causes and names whole, code cut from its start."""
    if column.numeric or column.whole or column.style is Style.CAUSE:
        cut = fit.Cut.NEVER
    else:
        cut = fit.Cut.START if column.style is Style.CODE else fit.Cut.END
    justify: Literal["left", "right"] = "right" if column.numeric else "left"
    return fit.Column(column.name, column.drop, cut, justify, _STYLES.get(column.style, ""))
