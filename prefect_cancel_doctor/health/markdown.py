"""`report --format markdown`: GitHub-flavoured Markdown for tickets, chat and the Prefect artifact.

Every value from the API is escaped (`cell`), so a run named "etl | [prod]"
cannot break a table or turn into a link.
"""

from __future__ import annotations

import re
from typing import TextIO

from prefect_cancel_doctor.health.layout import (
    Column,
    Section,
    Style,
    Tone,
    page_title,
    sections,
    sentence,
    status_line,
    status_tone,
    window_text,
)
from prefect_cancel_doctor.health.model import HealthReport
from prefect_cancel_doctor.render.markdown import link

#: Markdown has no colour: the status line starts with a marker instead (none when neutral).
_MARKERS = {Tone.BAD: "", Tone.OK: "✅ ", Tone.WARN: "⚠️ ", Tone.NEUTRAL: ""}

#: What Markdown could read as emphasis, code, a link, HTML, a table border or strikethrough.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def cell(value: object) -> str:
    """A value safe inside a Markdown table cell: one line, Markdown characters escaped."""
    text = "–" if value is None or value == "" else str(value)
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))


def code(value: object) -> str:
    """A value as inline code (backticks inside it replaced)."""
    return "`" + " ".join(str(value).split()).replace("`", "'").replace("|", "\\|") + "`"


def render_health_markdown(report: HealthReport, out: TextIO) -> None:
    """Write the report as Markdown."""
    out.write("\n".join(markdown_lines(report)) + "\n")


def markdown_lines(report: HealthReport) -> list[str]:
    """The report, one Markdown line at a time."""
    r = report
    lines = [
        f"# {cell(page_title(r))}",
        "",
        f"Prefect API {code(r.api_url or '-')}, {cell(window_text(r))}.",
        "",
    ]
    status = f"{_MARKERS[status_tone(r)]}**{cell(sentence(status_line(r)))}"
    if r.breaches:
        lines += [f"{status}:**", ""]
        lines += [f"- ❌ {code(b.rule)} — {cell(b.message)}" for b in r.breaches]
    else:
        lines.append(f"{status}.**")
    for section in sections(r):
        if section.is_empty:  # one line
            lines += ["", f"## {cell(section.title)}: {cell(section.empty)}"]
        else:
            lines += ["", f"## {cell(section.title)}", ""]
            lines += _table(section) if section.rows else []
        notes = [f"- {cell(note)}" for note in section.notes]
        lines += ["", *notes] if notes and section.columns else notes
    return lines


def _table(section: Section) -> list[str]:
    lines = ["| " + " | ".join(c.name and cell(c.name) for c in section.columns) + " |"]
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in section.columns) + "|")
    for i, row in enumerate(section.rows):
        cells = (
            link(_cell(v, c), section.link(i) if c.link else None)
            for v, c in zip(row, section.columns, strict=True)
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(value: str, column: Column) -> str:
    if column.style is Style.BAR:
        return value
    if column.style in (Style.CAUSE, Style.CODE) and value != "–":
        return code(value)
    return cell(value)
