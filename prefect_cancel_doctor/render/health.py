"""Renderers of the health report: one module per format, chosen from an enum."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import TextIO

from typing_extensions import assert_never

from prefect_cancel_doctor.durations import seconds_text
from prefect_cancel_doctor.health import GroupStats, HealthReport, StuckRun
from prefect_cancel_doctor.render import HealthFormat


def render_health(report: HealthReport, fmt: HealthFormat, out: TextIO, *, color: bool | None = None) -> None:
    """Write `report` to `out` in `fmt`."""
    if fmt is HealthFormat.TERMINAL:
        from prefect_cancel_doctor.render.health_terminal import render_health_terminal

        render_health_terminal(report, out, color=color)
    elif fmt is HealthFormat.MARKDOWN:
        from prefect_cancel_doctor.render.health_markdown import render_health_markdown

        render_health_markdown(report, out)
    elif fmt is HealthFormat.HTML:
        from prefect_cancel_doctor.render.health_html import render_health_html

        render_health_html(report, out)
    elif fmt is HealthFormat.JSON:
        from prefect_cancel_doctor.render.health_json import render_health_json

        render_health_json(report, out)
    else:
        assert_never(fmt)


def write_health(
    report: HealthReport, fmt: HealthFormat, path: str | Path, *, color: bool | None = None
) -> None:
    """Render `report` into the file `path` atomically: a temporary file beside it, then a rename.

    A reader (a web server, a dashboard) never sees a half-written report, and
    a failed run leaves the previous report in place.
    """
    target = Path(path)
    buffer = io.StringIO()
    render_health(report, fmt, buffer, color=False if color is None else color)
    directory = target.parent if str(target.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- wording shared by the formats ---------------------------------------------------------


def percent(share: float) -> str:
    """0.125 → '12%'."""
    return f"{share * 100:.0f}%"


#: Columns of the worst-offenders table, in every format.
OFFENDER_HEADERS = ("deployment", "resisted", "of", "share", "timed out", "ignored", "cancelling", "slow")


def offender_figures(group: GroupStats) -> list[str]:
    """The worst-offenders row after the deployment's name (which each format escapes its own way)."""
    return [
        str(group.resisted),
        str(group.requested),
        percent(group.resistance),
        str(group.timed_out),
        str(group.ignored),
        str(group.cancelling),
        str(group.slow),
    ]


#: Columns of the by-deployment, by-work-pool and by-worker tables after the group's name.
STATS_HEADERS = ("cancels", "cancelled", "timed out", "ignored", "cancelling", "p50", "p95", "max")


def stats_figures(group: GroupStats) -> list[str]:
    """A by-group row after the group's name (which each format escapes its own way)."""
    ttc = group.time_to_cancel
    return [
        str(group.requested),
        str(group.cancelled),
        str(group.timed_out),
        str(group.ignored),
        str(group.cancelling),
        seconds_text(ttc.p50),
        seconds_text(ttc.p95),
        seconds_text(ttc.max),
    ]


def status_line(report: HealthReport) -> str:
    """One sentence: healthy, or how many rules are breached."""
    if report.breaches:
        return f"{len(report.breaches)} rule(s) breached"
    if report.rules:
        return f"healthy: {len(report.rules)} rule(s) checked, none breached"
    return "no --fail-on rules given"


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


__all__ = ["HealthFormat", "render_health", "write_health"]
