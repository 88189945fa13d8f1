"""`report --format html`: one self-contained page (inline CSS and SVG charts, no script, no network).

The charts are drawn by pygal as SVG and inlined; pygal's JavaScript (which it
would load from the network) is turned off. Every value from the API goes
through `html.escape`; chart labels are escaped by pygal's XML writer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from typing import TextIO

import pygal
from pygal.style import Style

from prefect_cancel_doctor.durations import seconds_text, tick_text
from prefect_cancel_doctor.health import Cancellation, GroupStats, HealthReport
from prefect_cancel_doctor.render.health import (
    OFFENDER_HEADERS,
    STATS_HEADERS,
    deployment_of,
    offender_figures,
    site_text,
    source_lines,
    stats_figures,
    status_line,
    stuck_call,
    stuck_cause,
)

#: Outcome colours, shared by the charts and the page.
GREEN, AMBER, RED, PURPLE, ORANGE, BLUE = "#2e9e5b", "#e0a526", "#d64545", "#8e5cc9", "#f07a2f", "#3b7dd8"

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
section { background: #fff; border: 1px solid #e2e6ec; border-radius: 8px; padding: 16px 18px;
          margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #edf0f4; vertical-align: top; }
th { font-size: 12px; color: #5b6575; text-transform: uppercase; letter-spacing: .03em; background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mono, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px;
                 word-break: break-all; }
.cause { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #fff1e0; color: #9a4d00;
         font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
.none { color: #5b6575; font-style: italic; }
.more { color: #5b6575; font-size: 12px; margin: 6px 0 0; }
.note { color: #5b6575; font-size: 12.5px; margin: 8px 0 0; }
footer { color: #5b6575; font-size: 12.5px; }
footer ul { padding-left: 18px; }
@media (max-width: 900px) { .charts { grid-template-columns: 1fr; } }
"""


def _style() -> Style:
    return Style(
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
        colors=(BLUE,),
    )


def _svg(chart: pygal.graph.graph.Graph) -> str:
    svg = chart.render(is_unicode=True)
    # pygal's inline config script serves only its (disabled) JavaScript tooltips.
    return re.sub(r"<script\b.*?</script>", "", svg, flags=re.S)


def histogram_chart(report: HealthReport) -> str:
    """SVG bar chart of the time-to-cancel distribution."""
    style = _style()
    style.colors = (BLUE,)
    chart = pygal.Bar(
        js=[],
        disable_xml_declaration=True,
        style=style,
        width=640,
        height=330,
        show_legend=False,
        print_values=True,
        x_title="time to cancel (Cancelling → final state)",
        x_label_rotation=25,
        y_title="cancels",
        margin=12,
    )
    chart.title = "Time to cancel"
    chart.x_labels = [b.label for b in report.histogram]
    chart.add("cancels", [b.count for b in report.histogram])
    return _svg(chart)


def _top_deployments(report: HealthReport) -> list[GroupStats]:
    return list(report.by_deployment[: report.top])[::-1]


def outcomes_chart(report: HealthReport) -> str:
    """SVG stacked horizontal bars: how each deployment's cancels ended."""
    groups = _top_deployments(report)
    style = _style()
    style.colors = (GREEN, AMBER, RED, PURPLE, ORANGE)
    chart = pygal.HorizontalStackedBar(
        js=[],
        disable_xml_declaration=True,
        style=style,
        width=640,
        height=max(260, 70 + 34 * len(groups)),
        legend_at_bottom=True,
        legend_at_bottom_columns=5,
        print_values=False,
        truncate_label=40,
        truncate_legend=-1,
        margin=12,
    )
    chart.title = "Cancels per deployment, by outcome"
    chart.x_labels = [g.name for g in groups]
    chart.add("cancelled", [g.cancelled - g.slow for g in groups])
    chart.add("slow", [g.slow for g in groups])
    chart.add("timed out", [g.timed_out for g in groups])
    chart.add("ignored", [g.ignored for g in groups])
    chart.add("still cancelling", [g.cancelling for g in groups])
    return _svg(chart)


def latency_chart(report: HealthReport) -> str:
    """SVG horizontal bars: p50 and p95 time to cancel per deployment (log scale)."""
    groups = _top_deployments(report)
    ticks = _log_ticks(groups)
    style = _style()
    style.colors = (BLUE, RED)
    chart = pygal.HorizontalBar(
        js=[],
        disable_xml_declaration=True,
        style=style,
        width=1280,
        height=max(260, 70 + 40 * len(groups)),
        logarithmic=True,
        y_labels=ticks,
        range=(ticks[0], ticks[-1]),
        zero=ticks[0],
        legend_at_bottom=True,
        print_values=True,
        value_formatter=tick_text,
        truncate_label=48,
        margin=12,
        margin_right=36,
    )
    chart.title = "Time to cancel per deployment (seconds, log scale)"
    chart.x_labels = [g.name for g in groups]
    chart.add("p50", [_positive(g.time_to_cancel.p50) for g in groups])
    chart.add("p95", [_positive(g.time_to_cancel.p95) for g in groups])
    return _svg(chart)


def _log_ticks(groups: Sequence[GroupStats]) -> list[float]:
    """Round values (1 s, 1 min, 5 min, …) for the log axis, around the data."""
    values = [v for g in groups for v in (g.time_to_cancel.p50, g.time_to_cancel.p95) if v]
    if not values:
        return [1.0]
    low, high = min(values), max(values)
    ticks = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)
    return [t for t in ticks if low / 10 <= t <= high * 10]


def _positive(value: float | None) -> float | None:
    # A log scale cannot show 0; a cancel that took no measurable time is drawn at 1 ms.
    return None if value is None else max(value, 0.001)


# -- tables ---------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _e(value: object) -> str:
    return "–" if value is None or value == "" else escape(str(value))


def _more(total: int, shown: int) -> str:
    return (
        f'<p class="more">… and {total - shown} more (all of them are in --format json).</p>'
        if total > shown
        else ""
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _none() -> str:
    return '<p class="none">None.</p>'


def _stats_table(what: str, groups: Sequence[GroupStats], top: int) -> str:
    rows = [[_e(g.name), *stats_figures(g)] for g in groups[:top]]
    return (
        (_table([what, *STATS_HEADERS], rows, range(1, 9)) + _more(len(groups), top)) if groups else _none()
    )


def _cancels_table(cancels: Sequence[Cancellation], top: int) -> str:
    if not cancels:
        return _none()
    rows = [
        [
            _e(c.flow_run_name),
            _e(c.deployment),
            _e(c.worker),
            _e(c.requested_at),
            _e(c.end_state_name),
            seconds_text(c.seconds),
            f'<span class="mono">{_e(c.infrastructure_pid)}</span>',
        ]
        for c in cancels[:top]
    ]
    headers = ["run", "deployment", "worker", "cancel requested", "ended as", "after", "infrastructure"]
    return _table(headers, rows, [5]) + _more(len(cancels), top)


def _kpi(label: str, value: str, tone: str = "") -> str:
    return (
        f'<div class="kpi {tone}"><div class="value">{escape(value)}</div>'
        f'<div class="label">{escape(label)}</div></div>'
    )


def render_health_html(report: HealthReport, out: TextIO) -> None:
    """Write the report as one self-contained HTML page."""
    out.write(html_page(report))


def html_page(report: HealthReport) -> str:
    """The whole page."""
    r, top = report, report.top
    f, t = r.fleet, r.fleet.time_to_cancel
    parts: list[str] = []
    title = f"Cancellation health — last {r.window.label}"
    parts.append(f"<h1>Cancellation health <small>last {_e(r.window.label)}</small></h1>")
    parts.append(
        f'<p class="meta">Prefect API {_e(r.api_url)} · {_e(r.window.since)} → {_e(r.window.until)}</p>'
    )
    breaches = "".join(f"<li><code>{_e(b.rule)}</code> — {_e(b.message)}</li>" for b in r.breaches)
    tone = "bad" if r.breaches else "ok"
    parts.append(
        f'<div class="status {tone}" id="status">{_e(status_line(r).capitalize())}'
        + (f"<ul>{breaches}</ul>" if breaches else "")
        + "</div>"
    )
    parts.append(
        '<div class="kpis" id="summary">'
        + _kpi("cancels requested", str(f.requested))
        + _kpi("cancelled", str(f.cancelled))
        + _kpi("timed out by the server", str(f.timed_out), "red" if f.timed_out else "")
        + _kpi("ignored", str(f.ignored), "purple" if f.ignored else "")
        + _kpi("stuck now", str(len(r.stuck)), "amber" if r.stuck else "")
        + _kpi("p50", seconds_text(t.p50))
        + _kpi("p95", seconds_text(t.p95))
        + _kpi("max", seconds_text(t.max))
        + "</div>"
    )
    charts = [
        f'<figure id="chart-time-to-cancel">{histogram_chart(r)}<figcaption>{t.count} ended cancel(s); '
        f"the server's cancelling timeout shows as a spike at its value.</figcaption></figure>",
    ]
    if r.by_deployment:
        charts.append(
            f'<figure id="chart-outcomes">{outcomes_chart(r)}<figcaption>slow = cancelled after more than '
            f"{escape(seconds_text(r.slow_seconds))}.</figcaption></figure>"
        )
        charts.append(f'<figure id="chart-latency" class="wide">{latency_chart(r)}</figure>')
    parts.append('<div class="charts">' + "".join(charts) + "</div>")

    suffix = "" if r.sampled else " (located from the API, not sampled)"
    if r.stuck:
        rows = [
            [
                _e(s.flow_run.name),
                _e(deployment_of(s)),
                _e(s.flow_run.work_pool_name),
                seconds_text(s.flow_run.cancelling_for_seconds),
                _e(s.location),
                f'<span class="cause">{_e(stuck_cause(s))}</span>',
                f'<span class="mono">{_e(stuck_call(s))}</span>',
            ]
            for s in r.stuck[:top]
        ]
        body = _table(
            ["run", "deployment", "work pool", "in Cancelling", "where", "cause", "blocking call"], rows, [3]
        )
        body += _more(len(r.stuck), top)
        notes = sorted({s.note for s in r.stuck[:top] if s.note and not s.sampled})
        body += "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    else:
        body = _none()
    parts.append(_section("stuck", f"Stuck in Cancelling now: {len(r.stuck)}{suffix}", body))
    if r.live_orphans:
        rows = [
            [
                _e(s.flow_run.name),
                _e(s.flow_run.state_name),
                _e(s.location),
                f'<span class="cause">{_e(stuck_cause(s))}</span>',
                _e(stuck_call(s)),
            ]
            for s in r.live_orphans[:top]
        ]
        parts.append(
            _section(
                "live-orphans",
                f"Finished runs whose processes still run here: {len(r.live_orphans)}",
                _table(["run", "state", "where", "cause", "blocking call"], rows),
            )
        )
    if r.top_causes or r.top_call_sites:
        body = ""
        if r.top_causes:
            body += _table(
                ["cause", "runs"],
                [[f'<span class="cause">{_e(c.value)}</span>', str(c.count)] for c in r.top_causes],
                [1],
            )
        if r.top_call_sites:
            rows = [
                [
                    f'<span class="mono">{_e(site_text(c.function, c.filename, c.line))}</span>',
                    _e(c.kind),
                    str(c.count),
                    _e(", ".join(c.runs)),
                ]
                for c in r.top_call_sites
            ]
            body += _table(["blocking call site", "kind", "runs", "which"], rows, [2])
        parts.append(_section("causes", "Why they are stuck", body))
    if r.worst_offenders:
        rows = [[_e(g.name), *offender_figures(g)] for g in r.worst_offenders]
        table = _table(list(OFFENDER_HEADERS), rows, range(1, 8))
        parts.append(_section("offenders", "Worst offenders", table))
    parts.append(_section("by-deployment", "By deployment", _stats_table("deployment", r.by_deployment, top)))
    parts.append(_section("by-work-pool", "By work pool", _stats_table("work pool", r.by_work_pool, top)))
    parts.append(_section("by-worker", "By worker", _stats_table("worker", r.by_worker, top)))
    intro = (
        '<p class="note">The run looks Cancelled, but nothing confirmed that its process or container '
        "stopped: check its infrastructure.</p>"
        if r.suspected_orphans
        else ""
    )
    parts.append(
        _section(
            "suspected-orphans",
            f"Suspected orphans: cancels the server's timeout ended ({len(r.suspected_orphans)})",
            intro + _cancels_table(r.suspected_orphans, top),
        )
    )
    parts.append(
        _section(
            "ignored",
            f"Cancels ignored: completed or failed after the cancel ({len(r.ignored_cancels)})",
            _cancels_table(r.ignored_cancels, top),
        )
    )
    if r.orphaned_children:
        rows = [
            [
                _e(c.flow_run_name),
                _e(c.deployment),
                _e(c.state_name),
                _e(c.parent_name),
                _e(c.parent_cancelled_at),
            ]
            for c in r.orphaned_children[:top]
        ]
        body = _table(["run", "deployment", "state", "parent", "parent cancelled at"], rows) + _more(
            len(r.orphaned_children), top
        )
    else:
        body = _none()
    parts.append(
        _section(
            "children",
            f"Sub-deployment runs still live after their parent was cancelled ({len(r.orphaned_children)})",
            body,
        )
    )
    if r.slots:
        rows = [
            [
                _e(h.scope.replace("_", " ")),
                _e(h.name),
                str(h.limit),
                _e(h.active_slots),
                str(h.held),
                _e(", ".join(h.runs)),
            ]
            for h in r.slots
        ]
        body = _table(
            ["limit on", "name", "limit", "in use", "held by stuck runs", "stuck runs"], rows, [2, 3, 4]
        )
    else:
        body = _none()
    parts.append(
        _section("slots", f"Concurrency slots held by stuck runs ({sum(h.held for h in r.slots)})", body)
    )
    parts.append(
        '<footer id="source"><h2>How this was read</h2><ul>'
        + "".join(f"<li>{_e(line)}</li>" for line in source_lines(r))
        + "</ul></footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )
