"""Where a run lives: its processes, its Docker container, its Kubernetes Job and pod."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect_cancel_doctor.model.samples import ProcessSample
from prefect_cancel_doctor.model.vocabulary import AttachMode, FoundBy, InfraKind, PodAttach, Role

#: `ContainerInfo.status` of a container the Docker engine does not know (removed).
CONTAINER_NOT_FOUND = "not_found"


@dataclass(frozen=True)
class ContainerStats:
    """One-shot resource use of a running container (`docker stats --no-stream`)."""

    #: CPU use over the engine's sampling interval, 100 = one full core.
    cpu_percent: float | None
    #: Memory in use, without the page cache (as `docker stats` shows it).
    memory_bytes: int | None
    #: The container's memory limit (the host's memory when unlimited).
    memory_limit_bytes: int | None
    #: Number of processes and threads in the container.
    pids: int | None


@dataclass(frozen=True)
class ContainerProcess:
    """One process of a container, as the Docker engine lists it (`docker top`)."""

    #: PID in the Docker engine's PID namespace (the host's, unless the engine runs elsewhere).
    pid: int
    #: Parent PID, in the same namespace as `pid`.
    ppid: int
    #: The command line, arguments joined by single spaces.
    args: str
    #: PID1, ENGINE, RUNNER or CHILD.
    role: Role
    #: PID inside the container's namespace, when it could be read (1 is the container's PID 1).
    ns_pid: int | None = None


@dataclass(frozen=True)
class ContainerEvent:
    """One entry of the Docker engine's event log for a container (`GET /events`)."""

    #: ISO 8601 time, UTC.
    at: str
    #: The engine's action: `kill`, `stop`, `die`, `oom`, `destroy`, ...
    action: str
    #: For `kill`: the signal sent (`15`, `SIGTERM`, `9`); for `die`: None.
    signal: str | None = None
    #: For `die`: the exit code.
    exit_code: int | None = None


@dataclass(frozen=True)
class ContainerInfo:
    """What the Docker engine says about a run's container: the facts the rules read."""

    #: Full container id.
    id: str
    #: Container name, without the leading "/".
    name: str | None
    #: created, running, paused, restarting, removing, exited, dead, or CONTAINER_NOT_FOUND.
    status: str
    #: State.Running (also true while paused or restarting).
    running: bool
    #: Exit code of the last run (137 = SIGKILLed, e.g. by `docker stop` after its timeout).
    exit_code: int | None = None
    #: True if the kernel's OOM killer ended the container.
    oom_killed: bool = False
    #: State.Error: why the engine could not start or stop it, if it says.
    error: str | None = None
    #: The image reference the container was created from (Config.Image).
    image: str | None = None
    #: Config.Cmd: the job's `command` (Prefect's default is `prefect flow-run execute`).
    command: tuple[str, ...] = ()
    #: Config.Entrypoint (empty: the image has none or it was reset).
    entrypoint: tuple[str, ...] = ()
    #: Config.StopSignal; None means the default, SIGTERM.
    stop_signal: str | None = None
    #: Config.StopTimeout in seconds; None means the engine's default (10 s) or the caller's `-t`.
    stop_timeout: int | None = None
    #: HostConfig.Init: Docker's own init (tini) runs as PID 1 and forwards signals.
    init: bool = False
    #: Host PID of the container's PID 1 (State.Pid), as the Docker engine sees it.
    host_pid: int | None = None
    #: Command line of the container's PID 1 (empty when not running or unknown).
    pid1_command: tuple[str, ...] = ()
    #: How many times the engine restarted it (restart policy).
    restart_count: int = 0
    #: HostConfig.RestartPolicy.Name ("no", "always", "on-failure", "unless-stopped"); None if unset.
    restart_policy: str | None = None
    #: When it last started / finished (ISO 8601, None if never).
    started_at: str | None = None
    finished_at: str | None = None
    #: Container labels (prefect-docker writes io.prefect.flow-run-id, io.prefect.worker-name, ...).
    labels: dict[str, str] = field(default_factory=dict)
    #: PREFECT__FLOW_RUN_ID from its environment, else the io.prefect.flow-run-id label.
    flow_run_id: str | None = None
    #: Cancellation-related Prefect settings from its environment (never secrets).
    settings: dict[str, str] = field(default_factory=dict)
    #: How its processes are sampled: "host" (host PIDs, from here), "sidecar" (a container
    #: sharing its PID namespace), or "none" (not running, or not attachable).
    attach: AttachMode = AttachMode.NONE
    #: Its processes with their roles (see Location.pids for the host-mode PIDs to sample).
    processes: tuple[ContainerProcess, ...] = ()
    #: One-shot CPU and memory use, when running.
    stats: ContainerStats | None = None
    #: What the Docker engine's event log says was done to the container since the run entered
    #: Cancelling (`kill` with its signal, `stop`, `die`), oldest first; None where not read.
    events: tuple[ContainerEvent, ...] | None = None


@dataclass(frozen=True)
class PodEventFact:
    """A recent Kubernetes event about the run's pod (Killing, FailedKillPod, Evicted ...)."""

    type: str
    reason: str
    message: str
    count: int = 1
    last_seen: str | None = None


@dataclass(frozen=True)
class PodFacts:
    """What the Kubernetes API says about a run's Job and pod: the facts the rules read."""

    namespace: str
    #: The Job named by `infrastructure_pid`.
    job: str | None
    #: False when the Job no longer exists; None when it could not be read.
    job_exists: bool | None = None
    #: The Job is being deleted (its deletionTimestamp is set; a Foreground deletion waits for its pods).
    job_deleting: bool = False
    #: The Job's backoffLimit (0 for prefect-kubernetes: a failed pod is not retried).
    backoff_limit: int | None = None
    #: The pod (None: the Job has no pod left).
    name: str | None = None
    #: Pending, Running, Succeeded, Failed, Unknown.
    phase: str | None = None
    #: The pod's status reason and message (Evicted: "The node was low on resource ...").
    reason: str | None = None
    message: str | None = None
    node: str | None = None
    #: The node's Ready condition ("True", "False", "Unknown"; None when it could not be read).
    node_ready: str | None = None
    node_reason: str | None = None
    #: The container that runs the flow, its runtime id (``containerd://…``) and state.
    container: str | None = None
    container_id: str | None = None
    #: running, waiting, terminated, or unknown.
    container_state: str | None = None
    #: Whether the flow's container runs.
    running: bool = False
    exit_code: int | None = None
    #: Why it terminated or waits (OOMKilled, Error, Completed, ErrImagePull ...).
    state_reason: str | None = None
    restart_count: int = 0
    #: The previous run's termination reason (an OOMKilled restart).
    last_state_reason: str | None = None
    #: The container's command and args (Prefect's default runs `prefect flow-run execute`).
    command: tuple[str, ...] = ()
    image: str | None = None
    #: Set once the pod is being deleted: when its grace period ends, and how long that is.
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    #: spec.terminationGracePeriodSeconds (a Job deletion's own grace is not passed to its pods).
    termination_grace_period_seconds: int | None = None
    finalizers: tuple[str, ...] = ()
    #: Seconds since `deletion_timestamp` (positive: Terminating past its grace period).
    past_grace_seconds: float | None = None
    #: Cancellation-related Prefect settings from the container's environment (never secrets).
    settings: dict[str, str] = field(default_factory=dict)
    #: The pod's latest events, oldest first.
    events: tuple[PodEventFact, ...] = ()
    #: How its processes were sampled.
    attach: PodAttach = PodAttach.NONE
    #: The ephemeral container the doctor used (it stays in the pod's spec until the pod is deleted).
    debug_container: str | None = None
    #: Every ephemeral container in the pod's spec (each stays there until the pod is deleted).
    ephemeral_containers: tuple[str, ...] = ()


#: Last statuses of an ECS task whose containers no longer run.
TASK_GONE_STATUSES = frozenset({"STOPPED", "DEPROVISIONING", "DELETED"})


@dataclass(frozen=True)
class TaskContainerFact:
    """One container of the run's ECS task, as `DescribeTasks` reports it."""

    name: str
    last_status: str | None = None
    exit_code: int | None = None
    #: Why it stopped ("OutOfMemoryError: Container killed due to memory usage", ...).
    reason: str | None = None


@dataclass(frozen=True)
class TaskFacts:
    """The run's ECS task: what ECS says of it (its task, task definition and container instance)
    and what this host has of it."""

    #: As in `infrastructure_pid` ("<cluster>::<task ARN>"): a name or an ARN.
    cluster: str
    task_arn: str
    cluster_name: str
    #: Why ECS could not be read, and what to do (no credentials, access denied, ...).
    error: str | None = None
    #: ECS does not know the task (DescribeTasks' failure reason, "MISSING").
    missing: str | None = None
    #: PROVISIONING, PENDING, RUNNING, ..., STOPPED (None: not read).
    last_status: str | None = None
    desired_status: str | None = None
    #: TaskFailedToStart, EssentialContainerExited, UserInitiated, SpotInterruption, ...
    stop_code: str | None = None
    stopped_reason: str | None = None
    #: ISO 8601 times (UTC).
    started_at: str | None = None
    stopping_at: str | None = None
    stopped_at: str | None = None
    #: EC2, FARGATE, EXTERNAL, or the capacity provider's name.
    launch_type: str | None = None
    on_fargate: bool = False
    enable_execute_command: bool = False
    containers: tuple[TaskContainerFact, ...] = ()
    #: The container that runs the flow (prefect-aws's "prefect", else the one the run overrides).
    container_name: str = "prefect"
    #: Its command: the run's override (prefect-aws sets it), else the task definition's.
    command: tuple[str, ...] = ()
    #: Seconds between StopTask's SIGTERM and its SIGKILL (the definition's stopTimeout, else 30).
    stop_timeout: int = 30
    #: The definition's linuxParameters, None where the definition could not be read.
    init_process_enabled: bool | None = None
    sys_ptrace: bool | None = None
    #: The EC2 container instance it runs on, and whether its ECS agent is connected.
    ec2_instance_id: str | None = None
    agent_connected: bool | None = None
    #: The Docker id of its flow container on this host's engine (this host is its EC2 instance).
    local_container: str | None = None
    flow_run_id: str | None = None

    @property
    def known(self) -> bool:
        """ECS answered for the task (it was read and is not missing)."""
        return self.error is None and self.missing is None and self.last_status is not None

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]

    @property
    def name(self) -> str:
        """ "prod/0123abcd…" """
        return f"{self.cluster_name}/{self.task_id}"

    @property
    def gone(self) -> bool:
        """ECS no longer runs it: stopped, or no longer known."""
        return self.missing is not None or (self.last_status or "") in TASK_GONE_STATUSES

    @property
    def running(self) -> bool:
        return self.known and not self.gone


@dataclass(frozen=True)
class Target:
    """Where a run lives, and how it was found."""

    kind: InfraKind
    description: str
    pid: int | None = None
    host: str | None = None
    container_id: str | None = None
    found_by: FoundBy = FoundBy.INFRASTRUCTURE_PID
    processes: tuple[ProcessSample, ...] = ()
    #: The run's Docker container as the engine reports it (kind "docker" only).
    container: ContainerInfo | None = None
    #: The run's Kubernetes Job and pod (kind "kubernetes" only).
    pod: PodFacts | None = None
    #: The run's ECS task (kind "ecs" only).
    task: TaskFacts | None = None
