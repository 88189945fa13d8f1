"""The health report in a terminal (rich): title and status, then each section as a table.

Every piece of data goes in as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

from typing import TextIO

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from prefect_cancel_doctor.health.layout import (
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
from prefect_cancel_doctor.render.terminal import console_for

_STYLES = {Style.CAUSE: "yellow", Style.BAR: "cyan"}
#: The status line's style: green only when rules were checked and hold.
_TONES = {Tone.BAD: "bold red", Tone.OK: "bold green", Tone.WARN: "bold yellow", Tone.NEUTRAL: "bold"}


def render_health_terminal(report: HealthReport, out: TextIO, *, color: bool | None = None) -> None:
    """Write the report for a terminal."""
    console = console_for(out, color)
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
        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left")
        for column in section.columns:
            table.add_column(column.name, justify="right" if column.numeric else "left", overflow="fold")
        styles = [_STYLES.get(column.style, "") for column in section.columns]
        for row in section.rows:
            table.add_row(*(Text(value, style=style) for value, style in zip(row, styles, strict=True)))
        console.print(table)
    else:
        console.print(title)
    for note in section.notes:
        console.print(Padding(Text(note, style="dim"), (0, 0, 0, 2)))
