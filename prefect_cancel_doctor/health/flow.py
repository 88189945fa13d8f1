"""The health report as a Prefect flow: a Markdown artifact, a notification, a schedule.

The only module that imports Prefect at its top; the CLI imports it inside
`schedule`. Deploy it like any flow: `prefect-cancel-doctor schedule --cron
"*/15 * * * *"` serves it from this process, or `prefect deploy` with the
entrypoint `prefect_cancel_doctor.health.flow:cancellation_health_report` runs it
on a work pool (see the README).
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.schedules import Cron
from prefect.settings import get_current_settings
from prefect.types.entrypoint import EntrypointType
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.health.build import build_health_report
from prefect_cancel_doctor.health.layout import status_line
from prefect_cancel_doctor.health.markdown import markdown_lines
from prefect_cancel_doctor.health.model import HealthReport
from prefect_cancel_doctor.health.options import parse_health_options
from prefect_cancel_doctor.scan.engine import Options

FLOW_NAME = "cancellation-health-report"
DEFAULT_ARTIFACT_KEY = "cancellation-health"


class ThresholdBreached(Exception):
    """Raised by the flow (with `fail_run_on_breach`) so that the run ends Failed."""


def prefect_connection() -> Connection:
    """The API this Prefect process talks to (its settings: environment, then profile)."""
    api = get_current_settings().api
    if not api.url:
        from prefect_cancel_doctor.errors import ConfigurationError

        raise ConfigurationError("PREFECT_API_URL is not set for this flow run")
    verify: bool | str = True
    if api.tls_insecure_skip_verify:
        verify = False
    elif api.ssl_cert_file:
        verify = api.ssl_cert_file
    return Connection(
        api.url.rstrip("/"),
        api.key.get_secret_value() if api.key else None,
        api.auth_string.get_secret_value() if api.auth_string else None,
        verify,
        "prefect settings",
    )


def breach_message(report: HealthReport) -> tuple[str, str]:
    """(subject, body) of the notification sent when rules are breached."""
    subject = f"Prefect cancellation health: {status_line(report)}"
    lines = [f"{subject} (last {report.window.label}, {report.api_url})"]
    lines.extend(f"- {b.rule}: {b.message}" for b in report.breaches)
    t = report.fleet.time_to_cancel
    lines.append(
        f"{report.fleet.requested} cancel(s), {report.fleet.timed_out} timed out, "
        f"{len(report.stuck)} stuck now; "
        f"time to cancel p50 {seconds_text(t.p50)}, p95 {seconds_text(t.p95)}, max {seconds_text(t.max)}."
    )
    return subject, "\n".join(lines)


def notification_block(block_ref: str) -> NotificationBlock:
    """Load the notification block named "block-type/block-name"; ValueError if there is none such."""
    if "/" not in block_ref:
        raise ValueError(f"{block_ref!r} is not a block reference like slack-webhook/oncall")
    try:
        block = Block.load(block_ref)
    except ValueError as exc:
        raise ValueError(f"no block {block_ref!r}: {exc}") from exc
    if not isinstance(block, NotificationBlock):
        raise ValueError(f"block {block_ref!r} is a {type(block).__name__}, not a notification block")
    return block


def cron_schedule(cron: str, timezone: str | None = None) -> Any:
    """The schedule for `serve`; ValueError on a bad cron string or time zone."""
    try:
        return Cron(cron, timezone=timezone)
    except Exception as exc:  # pydantic's ValidationError, croniter's errors
        raise ValueError(f"invalid schedule {cron!r}{f' in {timezone}' if timezone else ''}: {exc}") from exc


def notify(block_ref: str, report: HealthReport) -> None:
    """Send the breaches through a notification block named "block-type/block-name"."""
    block = notification_block(block_ref)
    subject, body = breach_message(report)
    # Prefect's own blocks answer synchronously here; a third-party block may be plainly async.
    sent: Any = block.notify(body=body, subject=subject)
    if inspect.iscoroutine(sent):
        run_coro_as_sync(sent)


@flow(
    name=FLOW_NAME,
    description="Cancellation across the fleet: time to cancel, stuck runs, suspected orphans, ignored "
    "cancels, orphaned sub-deployment runs and held concurrency slots, as a Markdown artifact.",
    persist_result=False,
    validate_parameters=True,
)
def cancellation_health_report(
    since: str = "24h",
    fail_on: list[str] | None = None,
    notify_block: str | None = None,
    sample: bool = False,
    slow: str = "60s",
    top: int = 10,
    artifact_key: str = DEFAULT_ARTIFACT_KEY,
    fail_run_on_breach: bool = False,
) -> dict[str, Any]:
    """Build the report, publish it as a Markdown artifact, notify on breached rules.

    Args:
        since: the window, e.g. "24h" or "7d".
        fail_on: `--fail-on` rules, e.g. ["stuck-older-than=15m", "p95-above=2m", "orphans"].
        notify_block: a notification block ("slack-webhook/oncall") told when a rule is breached.
        sample: sample the stuck runs' processes (only useful where they run).
        slow: a cancel slower than this counts as resisting.
        top: rows per table.
        artifact_key: the artifact's key; each run adds a version under it.
        fail_run_on_breach: end the run Failed when a rule is breached.
    """
    logger = get_run_logger()
    options = parse_health_options(
        since=since, slow=slow, top=top, sample=sample, fail_on=fail_on or (), scan=Options(samples=3)
    )
    with PrefectApi(prefect_connection()) as api:
        report = build_health_report(api, options)
    markdown = "\n".join(markdown_lines(report))
    artifact_id = create_markdown_artifact(
        markdown=markdown,
        key=artifact_key,
        description=f"Cancellation health, last {report.window.label}: {status_line(report)}",
    )
    logger.info(
        "%d cancel(s) in the last %s, %d stuck now; %s",
        report.fleet.requested,
        report.window.label,
        len(report.stuck),
        status_line(report),
    )
    for breach in report.breaches:
        logger.warning("breached: %s: %s", breach.rule, breach.message)
    notified = False
    if report.breaches and notify_block:
        notify(notify_block, report)
        notified = True
        logger.info("notified %s", notify_block)
    if report.breaches and fail_run_on_breach:
        raise ThresholdBreached("; ".join(f"{b.rule}: {b.message}" for b in report.breaches))
    return {
        "healthy": report.healthy,
        "breaches": [{"rule": b.rule, "message": b.message} for b in report.breaches],
        "cancels": report.fleet.requested,
        "stuck": len(report.stuck),
        "artifact_id": str(artifact_id),
        "notified": notified,
    }


def serve_report(
    cron: str,
    name: str = "fleet",
    timezone: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> None:
    """Serve the flow from this process on a cron schedule until interrupted (then its schedule is paused)."""
    cancellation_health_report.serve(
        name=name,
        schedules=[cron_schedule(cron, timezone)],
        parameters=parameters or {},
        entrypoint_type=EntrypointType.MODULE_PATH,
        pause_on_shutdown=True,
    )


__all__ = [
    "DEFAULT_ARTIFACT_KEY",
    "FLOW_NAME",
    "ThresholdBreached",
    "breach_message",
    "cancellation_health_report",
    "cron_schedule",
    "notification_block",
    "notify",
    "prefect_connection",
    "serve_report",
]
