"""The health report in a terminal (rich): status first, then one table per finding.

Every piece of data goes in as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from prefect_cancel_doctor.durations import seconds_text
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
from prefect_cancel_doctor.render.terminal import console_for

#: Columns never wrapped: a cause or a number split over two lines reads wrong.
_NO_WRAP = {"cause", "state", "in Cancelling", "p50", "p95", "max"}


def _table(title: str, *columns: str, right: Sequence[int] = ()) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=Text(title, style="bold"), title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(
            column,
            justify="right" if i in right else "left",
            overflow="fold",
            no_wrap=i in right or column in _NO_WRAP,
        )
    return table


def _row(table: Table, *values: object) -> None:
    table.add_row(*(v if isinstance(v, Text) else Text("–" if v is None else str(v)) for v in values))


def _more(console: Console, total: int, shown: int) -> None:
    if total > shown:
        console.print(Text(f"  … and {total - shown} more (--format json has them all)", style="dim"))


def _stats(console: Console, title: str, what: str, groups: Sequence[GroupStats], top: int) -> None:
    if not groups:
        return
    table = _table(title, what, *STATS_HEADERS, right=range(1, 9))
    for g in groups[:top]:
        _row(table, g.name, *stats_figures(g))
    console.print(table)
    _more(console, len(groups), top)


def _cancels(console: Console, title: str, cancels: Sequence[Cancellation], top: int) -> None:
    table = _table(title, "run", "deployment", "worker", "cancel requested", "ended as", "after", right=[5])
    for c in cancels[:top]:
        _row(
            table,
            c.flow_run_name,
            c.deployment,
            c.worker,
            c.requested_at,
            c.end_state_name,
            seconds_text(c.seconds),
        )
    console.print(table)
    _more(console, len(cancels), top)


def render_health_terminal(report: HealthReport, out: TextIO, *, color: bool | None = None) -> None:
    """Write the report for a terminal."""
    console = console_for(out, color)
    r, top = report, report.top
    title = Text(f"Cancellation health — last {r.window.label}", style="bold")
    title.append(f"   {r.window.since} → {r.window.until}   {r.api_url or ''}", style="dim")
    console.print(title)
    status = Text(status_line(r), style="bold red" if r.breaches else "bold green")
    console.print(status)
    for breach in r.breaches:
        line = Text("  ✗ ", style="red")
        line.append(breach.rule, style="bold")
        line.append(f"  {breach.message}")
        console.print(line)

    f, t = r.fleet, r.fleet.time_to_cancel
    summary = _table(
        "Fleet",
        "cancels",
        "cancelled",
        "timed out",
        "ignored",
        "still cancelling",
        "p50",
        "p95",
        "max",
        right=range(8),
    )
    _row(
        summary,
        f.requested,
        f.cancelled,
        f.timed_out,
        f.ignored,
        len(r.stuck),
        seconds_text(t.p50),
        seconds_text(t.p95),
        seconds_text(t.max),
    )
    console.print(summary)

    suffix = "" if r.sampled else " (located from the API, not sampled)"
    stuck = _table(
        f"Stuck in Cancelling now: {len(r.stuck)}{suffix}",
        "run",
        "deployment",
        "in Cancelling",
        "where",
        "cause",
        "blocking call",
        right=[2],
    )
    for s in r.stuck[:top]:
        _row(
            stuck,
            s.flow_run.name,
            deployment_of(s),
            seconds_text(s.flow_run.cancelling_for_seconds),
            s.location,
            Text(stuck_cause(s), style="yellow"),
            stuck_call(s),
        )
    console.print(stuck)
    _more(console, len(r.stuck), top)
    for note in sorted({s.note for s in r.stuck[:top] if s.note and not s.sampled}):
        console.print(Text(f"  note: {note}", style="dim"))
    if r.live_orphans:
        orphans = _table(
            f"Finished runs whose processes still run here: {len(r.live_orphans)}",
            "run",
            "state",
            "where",
            "cause",
            "blocking call",
        )
        for s in r.live_orphans[:top]:
            _row(
                orphans,
                s.flow_run.name,
                s.flow_run.state_name,
                s.location,
                Text(stuck_cause(s), style="red"),
                stuck_call(s),
            )
        console.print(orphans)

    if r.top_causes:
        causes = _table("Top causes", "cause", "runs", right=[1])
        for tally in r.top_causes:
            _row(causes, tally.value, tally.count)
        console.print(causes)
    if r.top_call_sites:
        sites = _table("Top blocking call sites", "call site", "kind", "runs", right=[2])
        for site in r.top_call_sites:
            _row(sites, site_text(site.function, site.filename, site.line), site.kind, site.count)
        console.print(sites)

    peak = max((b.count for b in r.histogram), default=0)
    histogram = _table("Time to cancel", "bucket", "cancels", "", right=[1])
    for bucket in r.histogram:
        bar = Text("█" * (round(30 * bucket.count / peak) if peak else 0), style="cyan")
        _row(histogram, bucket.label, bucket.count, bar)
    console.print(histogram)

    if r.worst_offenders:
        worst = _table("Worst offenders", *OFFENDER_HEADERS, right=range(1, 8))
        for g in r.worst_offenders:
            _row(worst, g.name, *offender_figures(g))
        console.print(worst)
    _stats(console, "By deployment", "deployment", r.by_deployment, top)
    _stats(console, "By work pool", "work pool", r.by_work_pool, top)
    _stats(console, "By worker", "worker", r.by_worker, top)
    _cancels(
        console,
        f"Suspected orphans (cancels the server's timeout ended): {len(r.suspected_orphans)}",
        r.suspected_orphans,
        top,
    )
    _cancels(
        console,
        f"Cancels ignored (completed/failed after the cancel): {len(r.ignored_cancels)}",
        r.ignored_cancels,
        top,
    )

    children = _table(
        f"Sub-deployment runs live after their parent was cancelled: {len(r.orphaned_children)}",
        "run",
        "deployment",
        "state",
        "parent",
    )
    for c in r.orphaned_children[:top]:
        _row(children, c.flow_run_name, c.deployment, c.state_name, c.parent_name)
    console.print(children)
    slots = _table(
        f"Concurrency slots held by stuck runs: {sum(h.held for h in r.slots)}",
        "limit on",
        "name",
        "limit",
        "in use",
        "held",
        "runs",
        right=[2, 3, 4],
    )
    for h in r.slots:
        _row(slots, h.scope.replace("_", " "), h.name, h.limit, h.active_slots, h.held, ", ".join(h.runs))
    console.print(slots)
    for fact in source_lines(r):
        console.print(Text(fact, style="dim"))
