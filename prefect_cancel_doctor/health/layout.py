"""The health report laid out once, format-neutral: what every format of it shows.

`sections(report)` builds the report's parts in order, each a title, a table
(columns, rows as text), what to say when it is empty, notes, and charts for
the formats that draw them; `page_title`, `status_line` and `status_tone` say
the rest. The terminal, Markdown and HTML writers (health_terminal.py,
health_markdown.py, health_html.py) only lay that list out, each escaping data
its own way; health.py picks the format. Reads only the report's model.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.links import flow_run_url
from prefect_cancel_doctor.fleet.protocol import UncoveredPool, age_text
from prefect_cancel_doctor.health.model import (
    CallSite,
    Cancellation,
    GroupStats,
    HealthReport,
    OrphanedChild,
    StuckRun,
    named,
)

_T = TypeVar("_T")


# -- the report, format-neutral -------------------------------------------------------------


class Style(str, enum.Enum):
    """How a column's cells read in each format."""

    TEXT = "text"
    #: A cause of the doctor's vocabulary: code in Markdown, a badge in HTML, coloured in a terminal.
    CAUSE = "cause"
    #: A call site or an infrastructure id: code in Markdown, monospace in HTML.
    CODE = "code"
    #: A bar of █ drawn to scale: coloured in a terminal.
    BAR = "bar"


@dataclass(frozen=True)
class Column:
    """A table column: its header, right-aligned if numeric, and how its cells read."""

    name: str
    numeric: bool = False
    style: Style = Style.TEXT
    #: Where the page is too narrow (a terminal), columns go in decreasing `drop` order; 0: always shown.
    drop: int = 0
    #: Its words are never shortened (names, causes, dates); numbers and causes never are either,
    #: and code is shortened only from its start, never into its file:line.
    whole: bool = False
    #: Its cell links to the row's run in the Prefect UI (`Section.links`), where the format can.
    link: bool = False


@dataclass(frozen=True)
class Chart:
    """What a section's table says, as a chart for the formats that draw (HTML); `key` names its kind."""

    key: str
    title: str
    labels: tuple[str, ...]
    #: (series name, one value per label).
    series: tuple[tuple[str, tuple[float | None, ...]], ...]
    caption: str = ""
    #: The values count things (cancels, runs): the value axis has whole-number ticks only.
    counts: bool = False


@dataclass(frozen=True)
class Section:
    """One part of the report, as every format shows it."""

    #: Its anchor in HTML ("stuck", "by-deployment").
    key: str
    title: str
    #: No columns: the section is only its notes.
    columns: tuple[Column, ...]
    #: The rows shown (at most the report's `top`), as text; data is escaped by each format.
    rows: tuple[tuple[str, ...], ...]
    #: Said after the title, on its line, instead of a table without rows.
    empty: str = "none"
    #: Sentences after the table: rows left out, how to read it, what to do.
    notes: tuple[str, ...] = ()
    #: Drawn instead of the table by the formats that can.
    charts: tuple[Chart, ...] = ()
    #: One per row: the UI page of the row's run, for the column marked `link` (None: no link).
    links: tuple[str | None, ...] = ()

    def link(self, row: int) -> str | None:
        """The UI page of row `row`'s run, if it has one."""
        return self.links[row] if row < len(self.links) else None

    @property
    def is_empty(self) -> bool:
        """A table section without rows: every format shows it as one line, "title: none"."""
        return bool(self.columns) and not self.rows


def page_title(report: HealthReport) -> str:
    """The report's title."""
    return f"Cancellation health — last {report.window.label}"


class Tone(str, enum.Enum):
    """How the status line reads: each format styles it (colour, class, marker) from this."""

    #: A rule is breached.
    BAD = "bad"
    #: Rules were checked and none is breached.
    OK = "ok"
    #: No rules given, but runs are stuck, orphaned, ignored their cancel or outlived their parent.
    WARN = "warn"
    #: No rules given and nothing found: neither good nor bad news.
    NEUTRAL = "neutral"


def window_text(report: HealthReport) -> str:
    """'since → until', to the second."""
    return f"{when(report.window.since)} → {when(report.window.until)}"


def status_line(report: HealthReport) -> str:
    """One sentence: healthy, how many rules are breached, or (without rules) what was found."""
    if report.breaches:
        return f"{len(report.breaches)} rule(s) breached"
    if report.rules:
        return f"healthy: {len(report.rules)} rule(s) checked, none breached"
    found = findings(report)
    return "no --fail-on rules given" + (f"; found {', '.join(found)}" if found else "")


def status_tone(report: HealthReport) -> Tone:
    """Green only when rules were checked and hold: without rules, stuck runs or orphans are a warning."""
    if report.breaches:
        return Tone.BAD
    if report.rules:
        return Tone.OK
    return Tone.WARN if findings(report) else Tone.NEUTRAL


def findings(report: HealthReport) -> list[str]:
    """What needs attention, counted: '2 run(s) stuck in Cancelling', '21 suspected orphan(s)', …"""
    r = report
    # A run the server timed out whose process still runs here is one orphan, not two.
    orphans = len({c.flow_run_id for c in r.suspected_orphans} | {s.flow_run.id for s in r.live_orphans})
    counts = (
        (len(r.stuck), "run(s) stuck in Cancelling"),
        (orphans, "suspected orphan(s)"),
        (len(r.ignored_cancels), "ignored cancel(s)"),
        (len(r.orphaned_children), "sub-deployment run(s) outliving their cancelled parent"),
    )
    return [f"{n} {what}" for n, what in counts if n]


def sentence(text: str) -> str:
    """`text` with its first letter in capitals (unlike str.capitalize, the rest as it was)."""
    return text[:1].upper() + text[1:]


def sections(report: HealthReport) -> list[Section]:
    """The report's parts in the order every format shows them (after the title and the status)."""
    r, f, top = report, report.fleet, report.top
    slow = seconds_text(r.slow_seconds)

    def page(run_id: str) -> str | None:
        return flow_run_url(r.ui_url, run_id)

    def stuck_page(s: StuckRun) -> str | None:
        return page(s.flow_run.id)

    def cancel_page(c: Cancellation | OrphanedChild) -> str | None:
        return page(c.flow_run_id)

    stuck_title = _counted("Stuck in Cancelling now", len(r.stuck))
    parts = [
        Section(
            "summary",
            "Fleet",
            _FLEET_COLUMNS,
            (_cells(f.requested, f.cancelled, f.timed_out, f.ignored, len(r.stuck), *_times(f)),),
            notes=(
                f"Time to cancel is Cancelling → a final state, over {f.time_to_cancel.count} ended "
                f"cancel(s). A cancel counts as resisting when it took longer than {slow}, timed out, was "
                "ignored or is still pending.",
            ),
        ),
        _time_to_cancel(r),
        _listed(
            "stuck",
            stuck_title + ("" if r.sampled or not r.stuck else _NOT_SAMPLED),
            _STUCK_COLUMNS,
            r.stuck,
            _stuck_row,
            top,
            notes=_unsampled_notes(r.stuck),
            link=stuck_page,
        ),
    ]
    if r.agents or any(s.published for s in r.stuck):
        parts.append(_coverage(r))
    if r.live_orphans:
        title = _counted("Finished runs whose processes still run here", len(r.live_orphans))
        parts.append(
            _listed("live-orphans", title, _ORPHAN_COLUMNS, r.live_orphans, _orphan_row, top, link=stuck_page)
        )
    if r.top_causes:
        parts.append(
            _listed("causes", "Top causes", _CAUSE_COLUMNS, r.top_causes, lambda c: (c.value, c.count))
        )
    if r.top_call_sites:
        title = "Top blocking call sites"
        parts.append(_listed("call-sites", title, _SITE_COLUMNS, r.top_call_sites, _site_row))
    if f.requested:  # without a cancel, "no offender" is no news
        parts.append(
            _listed("offenders", "Worst offenders", _OFFENDER_COLUMNS, r.worst_offenders, offender_row)
        )
    for key, what, groups in (
        ("by-deployment", "deployment", r.by_deployment),
        ("by-work-pool", "work pool", r.by_work_pool),
        ("by-worker", "worker", r.by_worker),
    ):
        if groups:
            columns = (Column(what), *_STATS_COLUMNS)
            parts.append(_listed(key, f"By {what}", columns, groups, stats_row, top))
    orphans, ignored, children = r.suspected_orphans, r.ignored_cancels, r.orphaned_children
    parts += [
        _listed(
            "suspected-orphans",
            _counted("Suspected orphans: cancels the server's timeout ended", len(orphans)),
            _CANCEL_COLUMNS,
            orphans,
            _cancel_row,
            top,
            notes=[_check_infrastructure(orphans)] if orphans else [],
            link=cancel_page,
        ),
        _listed(
            "ignored",
            _counted("Cancels ignored: completed or failed after the cancel", len(ignored)),
            _CANCEL_COLUMNS,
            ignored,
            _cancel_row,
            top,
            link=cancel_page,
        ),
        _listed(
            "children",
            _counted("Sub-deployment runs still live after their parent was cancelled", len(children)),
            _CHILD_COLUMNS,
            children,
            lambda c: (
                c.flow_run_name,
                c.deployment,
                c.state_name,
                c.parent_name,
                when(c.parent_cancelled_at),
            ),
            top,
            link=cancel_page,
        ),
        _listed(
            "slots",
            _counted("Concurrency slots held by stuck runs", sum(h.held for h in r.slots)),
            _SLOT_COLUMNS,
            r.slots,
            lambda h: (h.scope.replace("_", " "), h.name, h.limit, h.active_slots, h.held, ", ".join(h.runs)),
        ),
        Section("source", "How this was read", (), (), notes=tuple(source_lines(r))),
    ]
    return parts


_NOT_SAMPLED = ": located from the API, not sampled"


def _coverage(r: HealthReport) -> Section:
    """The fleet's agents (hosts that published), and the stuck runs none of them answered for, per pool."""
    columns = (
        Column("work pool"),
        Column("runs", True, drop=2),
        Column("which", drop=1),
        Column("agents seeing the pool", drop=3),
    )
    agents = [
        f"agent on {a.host}: last scan {age_text(a.age_seconds)}, work pools "
        f"{', '.join(a.work_pools) or 'none'}"
        for a in r.agents
    ]
    published = sum(1 for s in r.stuck if s.published)
    notes = [
        f"{published} stuck run(s) carry the verdict another host's doctor published (the 'where' column "
        "names the host and the verdict's age).",
        *agents,
    ]
    title = _counted("Stuck runs no agent answered for, per work pool", sum(len(u.runs) for u in r.uncovered))
    return _listed("coverage", title, columns, r.uncovered, _uncovered_row, notes=notes)


def _uncovered_row(u: UncoveredPool) -> tuple[object, ...]:
    return (u.pool, len(u.runs), ", ".join(u.runs), ", ".join(u.agents) or "none")


def _counted(title: str, count: int) -> str:
    """'title (count)'; an empty section's title carries no '(0)': its line ends in 'none'."""
    return f"{title} ({count})" if count else title


def _unsampled_notes(stuck: Sequence[StuckRun]) -> tuple[str, ...]:
    """Why runs were not sampled, each reason once, naming the runs it is about."""
    runs: dict[str, list[str]] = {}
    for s in stuck:
        if s.note and not s.sampled:
            runs.setdefault(s.note, []).append(s.flow_run.name)
    return tuple(f"{named(names)}: {note}" for note, names in sorted(runs.items()))


def _check_infrastructure(orphans: Sequence[Cancellation]) -> str:
    names = named(c.flow_run_name for c in orphans)
    return (
        "These runs look Cancelled, but nothing confirmed that their processes or containers stopped "
        f"({names}): check their infrastructure."
    )


def _cells(*values: object) -> tuple[str, ...]:
    """A row as text: '–' for a missing value."""
    return tuple("–" if v is None or v == "" else str(v) for v in values)


def _numeric(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name, numeric=True) for name in names)


_FLEET_COLUMNS = (
    *_numeric("cancels requested", "cancelled", "timed out by the server", "ignored", "still cancelling"),
    Column("p50", numeric=True, drop=1),
    *_numeric("p95", "max"),
)
_RUN = Column("run", whole=True, link=True)
_CAUSE = Column("cause", style=Style.CAUSE)
_CALL = Column("blocking call", style=Style.CODE)
_STUCK_COLUMNS = (
    _RUN,
    Column("deployment", drop=3),
    Column("work pool", drop=4),
    Column("in Cancelling", True, drop=1),
    Column("where", drop=2),
    _CAUSE,
    _CALL,
)
_ORPHAN_COLUMNS = (_RUN, Column("state", drop=2), Column("where", drop=1), _CAUSE, _CALL)
_CAUSE_COLUMNS = (_CAUSE, Column("runs", True))
_SITE_COLUMNS = (
    Column("blocking call site", style=Style.CODE),
    Column("kind", drop=2),
    Column("runs", True),
    Column("which", drop=1),
)
_CANCEL_COLUMNS = (
    _RUN,
    Column("deployment", drop=5),
    Column("worker", drop=6),
    Column("cancel requested", whole=True, drop=3),
    Column("ended as", drop=4),
    Column("after", True),
    Column("infrastructure", style=Style.CODE, drop=2),
)
_CHILD_COLUMNS = (
    _RUN,
    Column("deployment", drop=2),
    Column("state", drop=1),
    Column("parent", whole=True),
    Column("parent cancelled at", whole=True, drop=3),
)
_SLOT_COLUMNS = (
    Column("limit on", drop=2),
    Column("name"),
    Column("limit", True, drop=3),
    Column("in use", True, drop=4),
    Column("held by stuck runs", True),
    Column("stuck runs", drop=1),
)


def _stuck_row(s: StuckRun) -> tuple[object, ...]:
    ref = s.flow_run
    age = seconds_text(ref.cancelling_for_seconds)
    return (ref.name, deployment_of(s), ref.work_pool_name, age, s.location, stuck_cause(s), stuck_call(s))


def _orphan_row(s: StuckRun) -> tuple[object, ...]:
    return (s.flow_run.name, s.flow_run.state_name, s.location, stuck_cause(s), stuck_call(s))


def _site_row(c: CallSite) -> tuple[object, ...]:
    return (site_text(c.function, c.filename, c.line), c.kind, c.count, ", ".join(c.runs))


def _listed(
    key: str,
    title: str,
    columns: tuple[Column, ...],
    items: Sequence[_T],
    row: Callable[[_T], Sequence[object]],
    top: int | None = None,
    notes: Sequence[str] = (),
    link: Callable[[_T], str | None] | None = None,
) -> Section:
    """A section of one row per item, the first `top` items only (the rest are counted in a note);
    `link` gives each item's UI page, for the column marked `link`."""
    shown = items[:top] if top is not None else items
    more = len(items) - len(shown)
    left_out = [f"… and {more} more (all of them are in --format json)."] if more else []
    links = tuple(map(link, shown)) if link else ()
    rows = tuple(_cells(*row(i)) for i in shown)
    return Section(key, title, columns, rows, notes=(*left_out, *notes), links=links)


def _time_to_cancel(r: HealthReport) -> Section:
    """The histogram as a table of bars; in HTML, charts of it and of each deployment's cancels.

    Without an ended cancel the histogram is all zeros: the section is empty (one
    line) rather than a table or a chart of nothing.
    """
    ended = r.fleet.time_to_cancel.count
    peak = max((b.count for b in r.histogram), default=0)
    rows = tuple(
        (b.label, str(b.count), "█" * round(20 * b.count / peak) if peak else "") for b in r.histogram
    )
    charts = []
    if ended:
        charts.append(
            Chart(
                "time-to-cancel",
                "Time to cancel",
                tuple(b.label for b in r.histogram),
                (("cancels", tuple(float(b.count) for b in r.histogram)),),
                f"{ended} ended cancel(s); the server's cancelling timeout shows as a spike at its value.",
                counts=True,
            )
        )
    groups = r.by_deployment[: r.top]
    if groups:
        names = tuple(g.name for g in groups)
        charts.append(
            Chart(
                "outcomes",
                "Cancels per deployment, by outcome",
                names,
                (
                    ("cancelled", tuple(float(g.cancelled - g.slow) for g in groups)),
                    ("slow", tuple(float(g.slow) for g in groups)),
                    ("timed out", tuple(float(g.timed_out) for g in groups)),
                    ("ignored", tuple(float(g.ignored) for g in groups)),
                    ("still cancelling", tuple(float(g.cancelling) for g in groups)),
                ),
                f"slow = cancelled after more than {seconds_text(r.slow_seconds)}.",
                counts=True,
            )
        )
    timed = [g for g in groups if g.time_to_cancel.count]
    if timed:
        charts.append(
            Chart(
                "latency",
                "Time to cancel per deployment (log scale)",
                tuple(g.name for g in timed),
                (
                    ("p50", tuple(g.time_to_cancel.p50 for g in timed)),
                    ("p95", tuple(g.time_to_cancel.p95 for g in timed)),
                ),
            )
        )
    columns = (Column("time to cancel"), Column("cancels", True), Column("", style=Style.BAR))
    empty = "none ended in the window"
    return Section(
        "time-to-cancel", "Time to cancel", columns, rows if ended else (), empty, charts=tuple(charts)
    )


def percent(share: float) -> str:
    """0.125 → '12%'."""
    return f"{share * 100:.0f}%"


#: Columns of the worst-offenders table.
OFFENDER_HEADERS = ("deployment", "resisted", "of", "share", "timed out", "ignored", "cancelling", "slow")


_OFFENDER_COLUMNS = (Column(OFFENDER_HEADERS[0]), *_numeric(*OFFENDER_HEADERS[1:]))


def offender_row(g: GroupStats) -> tuple[object, ...]:
    """A worst-offenders row."""
    share = percent(g.resistance)
    return (g.name, g.resisted, g.requested, share, g.timed_out, g.ignored, g.cancelling, g.slow)


#: Columns of the by-deployment, by-work-pool and by-worker tables after the group's name.
STATS_HEADERS = ("cancels", "cancelled", "timed out", "ignored", "cancelling", "p50", "p95", "max")
#: Where a terminal is narrow, p50 goes first, then max.
_STATS_COLUMNS = tuple(
    Column(name, numeric=True, drop={"p50": 2, "max": 1}.get(name, 0)) for name in STATS_HEADERS
)


def stats_row(g: GroupStats) -> tuple[object, ...]:
    """A by-group row."""
    return (g.name, g.requested, g.cancelled, g.timed_out, g.ignored, g.cancelling, *_times(g))


def _times(group: GroupStats) -> tuple[str, str, str]:
    ttc = group.time_to_cancel
    return seconds_text(ttc.p50), seconds_text(ttc.p95), seconds_text(ttc.max)


def _cancel_row(c: Cancellation) -> tuple[object, ...]:
    after = seconds_text(c.seconds)
    return (
        c.flow_run_name,
        c.deployment,
        c.worker,
        when(c.requested_at),
        c.end_state_name,
        after,
        c.infrastructure_pid,
    )


def when(iso_time: str | None) -> str | None:
    """An ISO time to the second: '2026-11-30T08:20:58.051260Z' → '2026-11-30T08:20:58Z'."""
    return re.sub(r"\.\d+(?=Z$|[+-]\d\d:\d\d$)", "", iso_time) if iso_time else iso_time


def stuck_cause(run: StuckRun) -> str:
    """The verdict's cause, or why there is none."""
    if run.verdict is None:
        return "not sampled"
    return run.verdict.cause.value


def stuck_call(run: StuckRun) -> str:
    """'function (file:line)' of the blocking call, or '–'."""
    call = run.verdict.blocking_call if run.verdict else None
    if call is None:
        return "–"
    if call.filename:
        return f"{call.function} ({call.filename.rsplit('/', 1)[-1]}:{call.line})"
    return call.function


def deployment_of(run: StuckRun) -> str:
    """'flow/deployment' of a stuck run ('flow' without a deployment)."""
    ref = run.flow_run
    flow = ref.flow_name or "?"
    return f"{flow}/{ref.deployment_name}" if ref.deployment_name else flow


def site_text(function: str, filename: str | None, line: int | None) -> str:
    """'function at path:line'."""
    return f"{function} at {filename}:{line}" if filename else function


def source_lines(report: HealthReport) -> list[str]:
    """How the history was read, one fact a line."""
    s = report.source
    how = (
        "the events API (Cancelling events, then the events that ended them)"
        if s.method == "events"
        else "the runs' state histories (no events API)"
    )
    lines = [
        f"Read from {how}: {s.cancelling_events} Cancelling event(s), {s.end_events} ending event(s), "
        f"{s.runs_read} run(s), {s.history_reads} state histories; "
        f"{s.requests} request(s) in {s.seconds:.1f}s.",
    ]
    if s.events_retention_seconds is not None:
        lines.append(f"The server keeps events for {seconds_text(s.events_retention_seconds)}.")
    if s.cancelling_timeout_seconds is not None:
        timeout = seconds_text(s.cancelling_timeout_seconds)
        lines.append(f"The server marks runs Cancelled after {timeout} in Cancelling.")
    lines.extend(s.notes)
    lines.extend(f"error: {e}" for e in report.errors)
    return lines


__all__ = [
    "Chart",
    "Column",
    "Section",
    "Style",
    "Tone",
    "findings",
    "page_title",
    "sections",
    "sentence",
    "status_line",
    "status_tone",
    "when",
    "window_text",
]
