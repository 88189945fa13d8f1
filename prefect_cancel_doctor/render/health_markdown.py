"""`report --format markdown`: GitHub-flavoured Markdown for tickets, chat and the Prefect artifact.

Every value from the API is escaped (`cell`), so a run named "etl | [prod]"
cannot break a table or turn into a link.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TextIO

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

#: What Markdown could read as emphasis, code, a link, HTML, a table border or strikethrough.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def cell(value: object) -> str:
    """A value safe inside a Markdown table cell: one line, Markdown characters escaped."""
    text = "–" if value is None or value == "" else str(value)
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))


def code(value: object) -> str:
    """A value as inline code (backticks inside it replaced)."""
    return "`" + " ".join(str(value).split()).replace("`", "'").replace("|", "\\|") + "`"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """A Markdown table; `right` = indexes of right-aligned (numeric) columns. Cells are already escaped."""
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _more(total: int, shown: int) -> list[str]:
    return (
        ["", f"_… and {total - shown} more (all of them are in `--format json`)._"] if total > shown else []
    )


def _stats_section(title: str, what: str, groups: Sequence[GroupStats], top: int) -> list[str]:
    if not groups:
        return []
    rows = [[cell(g.name), *stats_figures(g)] for g in groups[:top]]
    return [
        f"## {title}",
        "",
        *table([what, *STATS_HEADERS], rows, range(1, 9)),
        *_more(len(groups), top),
        "",
    ]


def _cancels_rows(cancels: Sequence[Cancellation]) -> list[list[str]]:
    return [
        [
            cell(c.flow_run_name),
            cell(c.deployment),
            cell(c.worker),
            cell(c.requested_at),
            cell(c.end_state_name),
            seconds_text(c.seconds),
            code(c.infrastructure_pid) if c.infrastructure_pid else "–",
        ]
        for c in cancels
    ]


def render_health_markdown(report: HealthReport, out: TextIO) -> None:
    """Write the report as Markdown."""
    out.write("\n".join(markdown_lines(report)) + "\n")


def markdown_lines(report: HealthReport) -> list[str]:
    """The report, one Markdown line at a time."""
    r, top = report, report.top
    f = r.fleet
    ttc = f.time_to_cancel
    lines = [
        f"# Cancellation health — last {cell(r.window.label)}",
        "",
        f"Prefect API {code(r.api_url or '-')}, {cell(r.window.since)} → {cell(r.window.until)}.",
        "",
    ]
    if r.breaches:
        lines.append(f"**{status_line(r).capitalize()}:**")
        lines.append("")
        lines.extend(f"- ❌ {code(b.rule)} — {cell(b.message)}" for b in r.breaches)
    else:
        lines.append(f"**{status_line(r).capitalize()}.**")
    lines.append("")
    lines.extend(
        table(
            [
                "cancels requested",
                "cancelled",
                "timed out by the server",
                "ignored",
                "still cancelling",
                "p50",
                "p95",
                "max",
            ],
            [
                [
                    str(f.requested),
                    str(f.cancelled),
                    str(f.timed_out),
                    str(f.ignored),
                    str(len(r.stuck)),
                    seconds_text(ttc.p50),
                    seconds_text(ttc.p95),
                    seconds_text(ttc.max),
                ]
            ],
            range(8),
        )
    )
    lines.append("")
    lines.append(
        f"Time to cancel is Cancelling → a final state, over {ttc.count} ended cancel(s). "
        f"A cancel slower than {seconds_text(r.slow_seconds)}, timed out, ignored or still pending "
        "*resisted*."
    )
    lines.append("")

    title = "Stuck in Cancelling now" + ("" if r.sampled else " (located from the API, not sampled)")
    lines += [f"## {title} ({len(r.stuck)})", ""]
    if r.stuck:
        rows = [
            [
                cell(s.flow_run.name),
                cell(deployment_of(s)),
                cell(s.flow_run.work_pool_name),
                seconds_text(s.flow_run.cancelling_for_seconds),
                cell(s.location),
                code(stuck_cause(s)),
                cell(stuck_call(s)),
            ]
            for s in r.stuck[:top]
        ]
        lines += table(
            ["run", "deployment", "work pool", "in Cancelling", "where", "cause", "blocking call"], rows, [3]
        )
        lines += _more(len(r.stuck), top)
        notes = sorted({s.note for s in r.stuck[:top] if s.note and not s.sampled})
        lines += [""] + [f"> {cell(n)}" for n in notes] if notes else []
    else:
        lines.append("None.")
    lines.append("")
    if r.live_orphans:
        lines += [f"## Finished runs whose processes still run here ({len(r.live_orphans)})", ""]
        rows = [
            [
                cell(s.flow_run.name),
                cell(s.flow_run.state_name),
                cell(s.location),
                code(stuck_cause(s)),
                cell(stuck_call(s)),
            ]
            for s in r.live_orphans[:top]
        ]
        lines += [*table(["run", "state", "where", "cause", "blocking call"], rows), ""]

    if r.top_causes or r.top_call_sites:
        lines += ["## Why they are stuck", ""]
        if r.top_causes:
            lines += [
                *table(["cause", "runs"], [[code(t.value), str(t.count)] for t in r.top_causes], [1]),
                "",
            ]
        if r.top_call_sites:
            rows = [
                [
                    code(site_text(c.function, c.filename, c.line)),
                    cell(c.kind),
                    str(c.count),
                    cell(", ".join(c.runs)),
                ]
                for c in r.top_call_sites
            ]
            lines += [*table(["blocking call site", "kind", "runs", "which"], rows, [2]), ""]

    lines += ["## Time to cancel", ""]
    peak = max((b.count for b in r.histogram), default=0)
    rows = [
        [cell(b.label), str(b.count), "█" * (round(20 * b.count / peak) if peak else 0)] for b in r.histogram
    ]
    lines += [*table(["time to cancel", "cancels", ""], rows, [1]), ""]

    if r.worst_offenders:
        lines += ["## Worst offenders", ""]
        rows = [[cell(g.name), *offender_figures(g)] for g in r.worst_offenders]
        lines += [*table(list(OFFENDER_HEADERS), rows, range(1, 8)), ""]

    lines += _stats_section("By deployment", "deployment", r.by_deployment, top)
    lines += _stats_section("By work pool", "work pool", r.by_work_pool, top)
    lines += _stats_section("By worker", "worker", r.by_worker, top)

    lines += [f"## Suspected orphans: cancels the server's timeout ended ({len(r.suspected_orphans)})", ""]
    if r.suspected_orphans:
        lines.append(
            "The run looks Cancelled, but nothing confirmed that its process or container stopped: "
            "check its infrastructure."
        )
        lines.append("")
        headers = ["run", "deployment", "worker", "cancel requested", "ended as", "after", "infrastructure"]
        lines += table(headers, _cancels_rows(r.suspected_orphans[:top]), [5])
        lines += _more(len(r.suspected_orphans), top)
    else:
        lines.append("None.")
    lines.append("")

    lines += [f"## Cancels ignored: completed or failed after the cancel ({len(r.ignored_cancels)})", ""]
    if r.ignored_cancels:
        headers = ["run", "deployment", "worker", "cancel requested", "ended as", "after", "infrastructure"]
        lines += table(headers, _cancels_rows(r.ignored_cancels[:top]), [5])
        lines += _more(len(r.ignored_cancels), top)
    else:
        lines.append("None.")
    lines.append("")

    lines += [
        f"## Sub-deployment runs still live after their parent was cancelled ({len(r.orphaned_children)})",
        "",
    ]
    if r.orphaned_children:
        rows = [
            [
                cell(c.flow_run_name),
                cell(c.deployment),
                cell(c.state_name),
                cell(c.parent_name),
                cell(c.parent_cancelled_at),
            ]
            for c in r.orphaned_children[:top]
        ]
        lines += table(["run", "deployment", "state", "parent", "parent cancelled at"], rows)
        lines += _more(len(r.orphaned_children), top)
    else:
        lines.append("None.")
    lines.append("")

    lines += [f"## Concurrency slots held by stuck runs ({sum(h.held for h in r.slots)})", ""]
    if r.slots:
        rows = [
            [
                cell(h.scope.replace("_", " ")),
                cell(h.name),
                str(h.limit),
                "–" if h.active_slots is None else str(h.active_slots),
                str(h.held),
                cell(", ".join(h.runs)),
            ]
            for h in r.slots
        ]
        lines += table(
            ["limit on", "name", "limit", "in use", "held by stuck runs", "stuck runs"], rows, [2, 3, 4]
        )
    else:
        lines.append("None.")
    lines.append("")

    lines += ["## How this was read", ""]
    lines += [f"- {cell(line)}" for line in source_lines(r)]
    return lines
