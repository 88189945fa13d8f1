"""The report's view of a run (`FlowRunRef`) from the API's records."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect_cancel_doctor.clients.prefect_records import FlowRun, State, Worker, parse_time
from prefect_cancel_doctor.model import FlowRunRef, StateType, WorkerInfo, WorkerStatus


def cancelling_since(run: FlowRun, history: list[State] | None) -> str | None:
    """When the run last entered CANCELLING: the first of the latest unbroken CANCELLING states."""
    if history:
        since = None
        for state in history:
            if state.type is StateType.CANCELLING:
                since = since or state.timestamp
            elif since and state.type is not StateType.CANCELLED:
                since = None
        return since
    current = run.state
    return current.timestamp if current and current.type is StateType.CANCELLING else None


def to_flow_run_ref(
    run: FlowRun,
    flow_names: dict[str, str],
    deployment_names: dict[str, str],
    history: list[State] | None = None,
    workers: list[Worker] | None = None,
    now: datetime | None = None,
) -> FlowRunRef:
    """Build the report's view of a run from the API's records."""
    now = now or datetime.now(timezone.utc)
    state = run.state
    since = cancelling_since(run, history)
    since_dt = parse_time(since)
    return FlowRunRef(
        id=run.id,
        name=run.name,
        flow_name=flow_names.get(run.flow_id or ""),
        deployment_name=deployment_names.get(run.deployment_id or ""),
        work_pool_name=run.work_pool_name,
        state_type=run.state_type,
        state_name=state.name if state else "",
        state_message=state.message if state else None,
        start_time=run.start_time,
        infrastructure_pid=run.infrastructure_pid,
        labels=dict(run.labels),
        cancelling_for_seconds=(now - since_dt).total_seconds() if since_dt else None,
        cancelling_since=since,
        parent_task_run_id=run.parent_task_run_id,
        workers=tuple(_worker_info(w, now) for w in workers or ()),
    )


def _worker_info(worker: Worker, now: datetime) -> WorkerInfo:
    beat = parse_time(worker.last_heartbeat_time)
    return WorkerInfo(
        name=worker.name,
        status=WorkerStatus.parse(worker.status),
        last_heartbeat_time=worker.last_heartbeat_time,
        seconds_since_heartbeat=(now - beat).total_seconds() if beat else None,
        heartbeat_interval_seconds=worker.heartbeat_interval_seconds,
    )
