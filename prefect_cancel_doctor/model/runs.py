"""What the Prefect API says about a flow run and the workers of its pool."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_cancel_doctor.model.vocabulary import LabelValue, StateType, WorkerStatus

#: A worker's heartbeat interval when the API does not give one (PREFECT_WORKER_HEARTBEAT_SECONDS).
DEFAULT_HEARTBEAT_SECONDS = 30.0
#: Prefect's worker sleeps a random 0.7-1.3 intervals between heartbeats (`critical_service_loop`'s
#: `jitter_range=0.3` in prefect/workers/base.py), after the heartbeat call itself returns.
HEARTBEAT_JITTER = 0.3
#: What the heartbeat call itself may take before the server records it (a busy API).
HEARTBEAT_CALL_SLACK_SECONDS = 5.0


def heartbeat_due_seconds(interval: float | None) -> float:
    """The longest a live worker heartbeating every `interval` s (None: Prefect's default) goes
    between two heartbeats the server records."""
    return (interval or DEFAULT_HEARTBEAT_SECONDS) * (1 + HEARTBEAT_JITTER) + HEARTBEAT_CALL_SLACK_SECONDS


@dataclass(frozen=True)
class WorkerInfo:
    """A worker of the run's work pool, as the API reports it."""

    name: str
    status: WorkerStatus | None
    last_heartbeat_time: str | None
    seconds_since_heartbeat: float | None
    #: How often it heartbeats (`heartbeat_interval_seconds`; Prefect's default is 30 s).
    heartbeat_interval_seconds: float | None = None

    @property
    def heartbeat_due_seconds(self) -> float:
        """The longest this worker, if alive, goes between two heartbeats the server records."""
        return heartbeat_due_seconds(self.heartbeat_interval_seconds)

    @property
    def heartbeat_is_stale(self) -> bool:
        """No heartbeat for longer than a live worker goes without one: the API may still say
        ONLINE for up to three missed intervals, but a live worker would have sent one by now."""
        since = self.seconds_since_heartbeat
        return since is not None and since > self.heartbeat_due_seconds


@dataclass(frozen=True)
class FlowRunRef:
    """What the Prefect API says about one flow run."""

    id: str
    name: str
    flow_name: str | None
    deployment_name: str | None
    work_pool_name: str | None
    state_type: StateType
    state_name: str
    state_message: str | None
    start_time: str | None
    infrastructure_pid: str | None
    labels: dict[str, LabelValue]
    #: Seconds since the run entered CANCELLING, read from its state history.
    cancelling_for_seconds: float | None
    #: ISO time at which the run entered CANCELLING (None if it never did).
    cancelling_since: str | None
    parent_task_run_id: str | None = None
    workers: tuple[WorkerInfo, ...] = ()
