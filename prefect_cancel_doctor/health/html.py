"""`report --format html`: one self-contained page (inline CSS and SVG charts, no script, no network).

The charts are drawn by pygal as SVG and inlined; pygal's JavaScript (which it
would load from the network) is turned off. Every value from the API goes
through `html.escape`; chart labels are escaped by pygal's XML writer.
"""

from __future__ import annotations

import math
import re
from html import escape
from typing import TextIO

import pygal
from pygal.style import Style as ChartStyle

from prefect_cancel_doctor.core.durations import tick_text
from prefect_cancel_doctor.health.layout import (
    Chart,
    Column,
    Section,
    Style,
    page_title,
    sections,
    sentence,
    status_line,
    status_tone,
    window_text,
)
from prefect_cancel_doctor.health.model import HealthReport

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0; color: #1d2430; background: #f4f6f9; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h1 small { font-weight: 400; color: #5b6575; font-size: 18px; }
h2 { font-size: 18px; margin: 0 0 10px; }
.meta { color: #5b6575; margin: 0 0 16px; word-break: break-all; }
.status { padding: 12px 16px; border-radius: 8px; font-weight: 600; margin-bottom: 16px; }
.status.bad { background: #fdecec; color: #a12121; border: 1px solid #f3bcbc; }
.status.ok { background: #e8f6ee; color: #1f6e41; border: 1px solid #b7e0c6; }
.status.warn { background: #fff6e0; color: #7a5200; border: 1px solid #f0d48a; }
.status.neutral { background: #fff; color: #1d2430; border: 1px solid #e2e6ec; }
.status ul { margin: 6px 0 0; padding-left: 20px; font-weight: 400; }
.status code { font-weight: 600; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px;
        margin-bottom: 18px; }
.kpi { background: #fff; border-radius: 8px; padding: 12px 14px; border: 1px solid #e2e6ec; }
.kpi .value { font-size: 24px; font-weight: 700; }
.kpi .label { color: #5b6575; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.kpi.red .value { color: #c23030; }
.kpi.amber .value { color: #b07a0a; }
.kpi.purple .value { color: #7444b0; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; margin-bottom: 18px; }
.charts figure.wide { grid-column: 1 / -1; }
figure { margin: 0; background: #fff; border: 1px solid #e2e6ec; border-radius: 8px; padding: 12px; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { color: #5b6575; font-size: 12px; margin-top: 6px; }
.legend { list-style: none; display: flex; flex-wrap: wrap; justify-content: center; gap: 4px 16px;
          margin: 4px 0 0; padding: 0; font-size: 12px; }
.legend .swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
                  vertical-align: -1px; }
section { background: #fff; border: 1px solid #e2e6ec; border-radius: 8px; padding: 16px 18px;
          margin-bottom: 16px; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #edf0f4; vertical-align: top; }
th { font-size: 12px; color: #5b6575; text-transform: uppercase; letter-spacing: .03em; background: #fafbfc;
     white-space: nowrap; }
td.nowrap, td.nowrap .mono { white-space: nowrap; word-break: normal; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mono, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px;
                 word-break: break-all; }
.cause { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #fff1e0; color: #9a4d00;
         font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
.none { color: #5b6575; font-weight: 400; font-style: italic; }
section.empty { padding: 10px 18px; margin-bottom: 10px; }
section.empty h2 { margin: 0; font-size: 15px; }
.note { color: #5b6575; font-size: 12.5px; margin: 8px 0 0; }
@media (max-width: 900px) { .charts { grid-template-columns: 1fr; } }
"""


_BLUE, _RED = "#3b7dd8", "#d64545"
#: Each chart series' colour, by its name.
_COLOURS = {"cancels": _BLUE, "p50": _BLUE, "p95": _RED, "cancelled": "#2e9e5b", "slow": "#e0a526",
            "timed out": _RED, "ignored": "#8e5cc9", "still cancelling": "#f07a2f"}  # fmt: skip
#: Fleet figures shown in colour when not zero.
_TONES = {"timed out by the server": "red", "ignored": "purple", "still cancelling": "amber"}


def render_health_html(report: HealthReport, out: TextIO) -> None:
    """Write the report as one self-contained HTML page."""
    out.write(html_page(report))


def html_page(report: HealthReport) -> str:
    """The whole page."""
    r = report
    breaches = "".join(f"<li><code>{_e(b.rule)}</code> — {_e(b.message)}</li>" for b in r.breaches)
    parts = [
        f"<h1>Cancellation health <small>last {_e(r.window.label)}</small></h1>",
        f'<p class="meta">Prefect API {_e(r.api_url)} · {_e(window_text(r))}</p>',
        f'<div class="status {status_tone(r).value}" id="status">{_e(sentence(status_line(r)))}'
        + (f"<ul>{breaches}</ul>" if breaches else "")
        + "</div>",
        *map(_section, sections(r)),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(page_title(r))}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


def _section(section: Section) -> str:
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in section.notes)
    if section.key == "summary":  # the fleet's figures, as tiles
        tiles = "".join(map(_tile, section.columns, section.rows[0]))
        return f'<div class="kpis" id="summary">{tiles}</div>{notes}'
    if section.charts:  # drawn instead of the table
        return f'<div class="charts" id="{section.key}">{"".join(map(_figure, section.charts))}</div>'
    if section.is_empty:  # one line
        title = f'<h2>{_e(section.title)}: <span class="none">{_e(section.empty)}</span></h2>'
        return f'<section id="{section.key}" class="empty">{title}{notes}</section>'
    body = _table(section) if section.rows else ""
    return f'<section id="{section.key}"><h2>{_e(section.title)}</h2>{body}{notes}</section>'


def _e(value: object) -> str:
    return "–" if value is None or value == "" else escape(str(value))


def _tile(column: Column, value: str) -> str:
    tone = _TONES.get(column.name, "") if value != "0" else ""
    label = f'<div class="label">{_e(column.name)}</div>'
    return f'<div class="kpi {tone}"><div class="value">{_e(value)}</div>{label}</div>'


#: Cells up to this long never wrap (a run name, 'stuck-sleep/demo', 'time.sleep (stuck_sleep.py:20)'):
#: at 1280 px the table's widest columns took the room and broke them at a hyphen or mid-word.
_SHORT = {Style.TEXT: 32, Style.CODE: 44}


def _table(section: Section) -> str:
    """An HTML table of the section's rows; every value escaped."""
    columns = section.columns
    num = [' class="num"' if c.numeric else "" for c in columns]
    head = "".join(f"<th{n}>{escape(c.name)}</th>" for n, c in zip(num, columns, strict=True))
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{_classes(v, c)}>{_linked(_html(v, c), section.link(i) if c.link else None)}</td>"
            for v, c in zip(row, columns, strict=True)
        )
        + "</tr>"
        for i, row in enumerate(section.rows)
    )
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _classes(value: str, column: Column) -> str:
    names = ["num"] if column.numeric else []
    if column.numeric or len(value) <= _SHORT.get(column.style, 0):
        names.append("nowrap")
    return f' class="{" ".join(names)}"' if names else ""


def _linked(html: str, url: str | None) -> str:
    return f'<a href="{escape(url)}">{html}</a>' if url else html


def _html(value: str, column: Column) -> str:
    if column.style is Style.CAUSE:
        return f'<span class="cause">{_e(value)}</span>'
    if column.style is Style.CODE and value != "–":
        return f'<span class="mono">{_e(value)}</span>'
    return _e(value)


# -- charts: pygal's SVG, inlined ----------------------------------------------------------------


def _figure(chart: Chart) -> str:
    wide = ' class="wide"' if chart.key == "latency" else ""
    caption = f"<figcaption>{escape(chart.caption)}</figcaption>" if chart.caption else ""
    return f'<figure id="chart-{chart.key}"{wide}>{_svg(chart)}{_legend(chart)}{caption}</figure>'


def _legend(chart: Chart) -> str:
    """The series' names and colours, as HTML below the chart: it wraps instead of being clipped.

    pygal's own legend gets a fixed share of the SVG's width per entry and cuts
    longer names ("still cancelling") short.
    """
    if len(chart.series) < 2:
        return ""
    items = "".join(
        f'<li><span class="swatch" style="background:{_COLOURS[name]}"></span>{escape(name)}</li>'
        for name, _ in chart.series
    )
    return f'<ul class="legend">{items}</ul>'


def _svg(chart: Chart) -> str:
    """The chart as SVG: the histogram as columns, figures per deployment as horizontal bars."""
    style = ChartStyle(
        background="white",
        plot_background="white",
        foreground="#1d2430",
        foreground_strong="#1d2430",
        foreground_subtle="#8a93a3",
        font_family='system-ui, "DejaVu Sans", sans-serif',
        label_font_size=12,
        major_label_font_size=12,
        value_font_size=11,
        legend_font_size=12,
        title_font_size=15,
        colors=tuple(_COLOURS[name] for name, _ in chart.series),
    )
    common = {"js": [], "disable_xml_declaration": True, "style": style, "margin": 12, "show_legend": False}
    if chart.counts:  # whole numbers only: no tick at 0.5 cancels
        whole = _count_ticks(_peak(chart))
        common.update(y_labels=whole, range=(0, whole[-1]), value_formatter=_count_text)
    labels, series = list(chart.labels), [(name, list(values)) for name, values in chart.series]
    if chart.key == "time-to-cancel":
        graph = pygal.Bar(
            **common, width=640, height=330, print_values=True, print_zeroes=False, x_label_rotation=25,
            x_title="time to cancel (Cancelling → final state)", y_title="cancels",
        )  # fmt: skip
    else:  # pygal draws the first label at the bottom
        labels, series = labels[::-1], [(name, values[::-1]) for name, values in series]
        if chart.key == "latency":
            ticks = _log_ticks([v for _, values in series for v in values if v])
            # A log scale cannot show 0; a cancel that took no measurable time is drawn at 1 ms.
            series = [(name, [v if v is None else max(v, 0.001) for v in values]) for name, values in series]
            graph = pygal.HorizontalBar(
                **common, width=1280, height=max(200, 60 + 48 * len(labels)), logarithmic=True,
                y_labels=ticks, range=(ticks[0], ticks[-1]), zero=ticks[0],
                print_values=True, value_formatter=tick_text, truncate_label=48, margin_right=36,
            )  # fmt: skip
        else:
            graph = pygal.HorizontalStackedBar(
                **common, width=640, height=max(260, 70 + 34 * len(labels)), print_values=False,
                truncate_label=40,
            )  # fmt: skip
    graph.title = chart.title
    graph.x_labels = labels
    for name, values in series:
        graph.add(name, values)
    # pygal's inline config script serves only its (disabled) JavaScript tooltips.
    return re.sub(r"<script\b.*?</script>", "", graph.render(is_unicode=True), flags=re.S)


def _peak(chart: Chart) -> float:
    """The longest bar: the largest value, or the largest stack for the stacked outcomes."""
    columns = list(zip(*(values for _, values in chart.series), strict=True))
    if chart.key == "outcomes":
        return max((sum(v or 0 for v in column) for column in columns), default=0)
    return max((v or 0 for column in columns for v in column), default=0)


def _count_ticks(peak: float) -> list[int]:
    """Whole-number ticks from 0 past `peak`, in steps of 1, 2, 5, 10, 20, 50, …, six at most past 0."""
    step = 1
    for step in (m * 10**e for e in range(12) for m in (1, 2, 5)):
        if math.ceil(peak / step) <= 6:
            break
    top = max(1, math.ceil(peak / step)) * step
    return list(range(0, top + 1, step))


def _count_text(value: float) -> str:
    """A count as a whole number: '3', not '3.0'."""
    return f"{value:.0f}"


def _log_ticks(values: list[float]) -> list[float]:
    """Round values (1 s, 1 min, 5 min, …) for the log axis, around the data."""
    if not values:
        return [1.0]
    low, high = min(values), max(values)
    ticks = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)
    # The axis starts well below the shortest bar (a bar starting on the axis' first tick would
    # be a sliver, its value printed over the labels) and ends at the first tick past the longest.
    first = max((t for t in ticks if t <= low / 3), default=ticks[0])
    last = min((t for t in ticks if t >= high), default=ticks[-1])
    return [t for t in ticks if first <= t <= last]
