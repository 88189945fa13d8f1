"""A doctor on every host, scheduled by Prefect: `prefect-cancel-doctor agent`.

Each host serves one deployment of the flow `prefect-cancel-doctor-agent`, named
after the host (`PCD_HOST`, else its hostname), on an interval or a cron
schedule. Each of its runs scans the runs in Cancelling (and the orphans),
samples what of them runs on this host, and publishes the verdicts of the runs
this host answers for (`publish.covers`), with one `prefect-cancel-doctor.host.scanned`
event saying what the host saw (its work pools and workers): the central
report reads both (fleet.py). No protocol of our own: Prefect schedules the
agents, carries the verdicts and shows them.

Imports Prefect at its top, like health/flow.py; the CLI imports it inside `agent`.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

import httpx
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Failed
from prefect.types.entrypoint import EntrypointType

from prefect_cancel_doctor.act.policy import PolicyError
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.core.durations import parse_duration
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.redact import redact_url_passwords
from prefect_cancel_doctor.errors import DoctorError
from prefect_cancel_doctor.fleet.autopilot import Autopilot, autopilot_from_env, resolve_and_publish
from prefect_cancel_doctor.fleet.publish import host_name, scan_and_publish, seen_here
from prefect_cancel_doctor.health.flow import cron_schedule, prefect_connection

#: The agent's flow; each host serves a deployment of it named after the host.
AGENT_FLOW = "prefect-cancel-doctor-agent"
#: Tag on every agent deployment (to list the fleet's agents in the UI).
AGENT_TAG = "prefect-cancel-doctor"


@flow(
    name=AGENT_FLOW,
    description="prefect-cancel-doctor on one host: diagnose the runs stuck in Cancelling that run "
    "here and publish each verdict as an event and an artifact on the run.",
    persist_result=False,
    validate_parameters=True,
)
def cancel_doctor_agent(
    samples: int = 3,
    since: str = "1h",
    artifacts: bool = True,
    host: str | None = None,
    resolve: str | None = None,
) -> dict[str, Any] | State:
    """Scan this host and publish its verdicts; with `agent --autopilot`, act on what its policy allows.

    Args:
        samples: py-spy dumps per process.
        since: the window for orphans among Cancelled runs, e.g. "1h".
        artifacts: also write a Markdown artifact on each run (else events only).
        host: this host's name in the events (`agent --host`; None: PCD_HOST, else the hostname).
        resolve: a flow run's id (or name): instead of a scan, end that run if it is stuck and this
            host answers for it, as `resolve` does, with the autopilot's checks; the run of this
            deployment ends Failed, saying why, when it is refused.
    """
    logger = get_run_logger()
    host = host or host_name()
    if resolve:
        return _resolve(resolve, host, samples, artifacts)
    autopilot, unreadable = _autopilot()
    if unreadable:
        logger.error("autopilot: %s; this cycle acts on nothing", unreadable)
    with PrefectApi(prefect_connection()) as api:
        report, outcome = scan_and_publish(
            api,
            host=host,
            samples=samples,
            since=since,
            artifacts=artifacts,
            autopilot=autopilot,
            say=logger.info,
            agent_deployment=f"{AGENT_FLOW}/{host}",
        )
    logger.info("host %s: %d run(s) diagnosed; %s", host, len(report.runs), outcome.summary())
    for error in outcome.errors:
        logger.warning("%s", error)
    seen = seen_here(host)
    result: dict[str, Any] = {
        "host": host,
        "work_pools": list(seen.work_pools),
        "workers": list(seen.workers),
        "diagnosed": len(report.runs),
        "published": outcome.events,
        "artifacts": outcome.artifacts,
        "errors": outcome.errors,
    }
    if outcome.autopilot is not None:
        logger.info("%s", outcome.autopilot.summary())
        result["autopilot"] = {
            "policy": outcome.autopilot.policy.name,
            "mode": outcome.autopilot.mode,
            "kill_switch": outcome.autopilot.switch.off,
            **outcome.autopilot.counts(),
        }
    elif unreadable:
        result["autopilot"] = {"error": unreadable}
    return result


def _resolve(run: str, host: str, samples: int, artifacts: bool) -> dict[str, Any] | State:
    """The `resolve` parameter: that one run, resolved (or refused) and published."""
    logger = get_run_logger()
    with PrefectApi(prefect_connection()) as api:
        try:
            round_, outcome = resolve_and_publish(
                api,
                run.strip(),
                seen_here(host),
                samples=samples,
                artifacts=artifacts,
                agent_deployment=f"{AGENT_FLOW}/{host}",
                say=logger.info,
            )
        except DoctorError as exc:  # no such run, the API refused
            return Failed(message=f"resolve {visible(run, 100)}: {exc}"[:1000])
    for error in outcome.errors:
        logger.warning("%s", error)
    (action,) = round_.actions
    logger.info("%s", round_.summary())
    if not action.decision.act or (action.outcome is not None and not action.outcome.resolved):
        return Failed(message=round_.summary()[:1000])
    return {
        "host": host,
        "resolve": action.run_id,
        "decision": action.kind,
        "signalled": action.outcome.actions if action.outcome else [],
        "state": action.state_after,
    }


def _autopilot() -> tuple[Autopilot | None, str | None]:
    """The agent's autopilot (None: off), or why its policy could not be read."""
    try:
        return autopilot_from_env(), None
    except PolicyError as exc:
        return None, f"the policy could not be read: {exc}"


def schedule_of(interval: str | None, cron: str | None, timezone: str | None = None) -> dict[str, Any]:
    """`serve`'s schedule arguments; ValueError on a bad interval or cron."""
    if cron:
        return {"schedules": [cron_schedule(cron, timezone)]}
    seconds = parse_duration(interval or "5m").total_seconds()
    if seconds < 10:
        raise ValueError(f"an interval of {interval} is too short: a scan samples for seconds (10s at least)")
    return {"interval": timedelta(seconds=seconds)}


def serve_agent(
    *,
    host: str,
    interval: str | None = "5m",
    cron: str | None = None,
    timezone: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> None:
    """Serve this host's deployment until interrupted (its schedule is paused on the way out).

    An agent outlives a server that is restarting or briefly failing: the API unreachable or
    answering 5xx (a SQLite server answers 500 "database is locked" under load) while the
    deployment is registered makes it try again, 5 s then doubling up to a minute, instead of
    exiting and leaving its host uncovered until someone restarts it.
    """
    delay = 5.0
    while True:
        try:
            cancel_doctor_agent.serve(
                name=host,
                parameters={**(parameters or {}), "host": host},
                tags=[AGENT_TAG],
                description=f"prefect-cancel-doctor agent of host {host}",
                entrypoint_type=EntrypointType.MODULE_PATH,
                pause_on_shutdown=True,
                # One scan at a time per host: a slow one is not overtaken by the next.
                limit=1,
                **schedule_of(interval, cron, timezone),
            )
            return
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if not transient(exc):
                raise
            print(
                f"agent: the Prefect API failed ({describe(exc)}); trying again in {delay:.0f} s",
                file=sys.stderr,
            )
            time.sleep(delay)
            delay = min(delay * 2, 60.0)


def transient(exc: httpx.TransportError | httpx.HTTPStatusError) -> bool:
    """A failure worth retrying: the server unreachable, or its own error (5xx), not ours (4xx)."""
    return isinstance(exc, httpx.TransportError) or exc.response.status_code >= 500


def describe(exc: httpx.TransportError | httpx.HTTPStatusError) -> str:
    """One line without the response body (which may echo what we sent) or a URL's password."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url.path}"
    return redact_url_passwords(f"{type(exc).__name__}: {exc}")


__all__ = [
    "AGENT_FLOW",
    "AGENT_TAG",
    "cancel_doctor_agent",
    "schedule_of",
    "serve_agent",
]
