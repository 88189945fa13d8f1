"""The report model: frozen dataclasses that every renderer reads.

`Report.to_dict()` is the JSON contract described in the README (causes and
their evidence: docs/how-cancellation-works.md); the terminal view walks the same objects, so
the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, enum.Enum):
        """`enum.StrEnum` of Python 3.11: members are their values, also in f-strings."""

        def __str__(self) -> str:
            return str(self.value)


#: A label's value on a flow run (Prefect's `KeyValueLabels`).
LabelValue = str | int | float | bool | None


class Cause(StrEnum):
    """Why cancellation of a run has not completed (docs/how-cancellation-works.md, section 5)."""

    CANCEL_NOT_OBSERVED = "cancel_not_observed"
    SIGNAL_IGNORED = "signal_ignored"
    SIGNAL_PENDING = "signal_pending"
    EXIT_BLOCKED_BY_THREAD = "exit_blocked_by_thread"
    EVENT_LOOP_BLOCKED = "event_loop_blocked"
    PID1_NO_FORWARD = "pid1_no_forward"
    UNINTERRUPTIBLE_IO = "uninterruptible_io"
    CHILD_PROCESS_SURVIVES = "child_process_survives"
    CANCELLATION_HOOK_HANG = "cancellation_hook_hang"
    NEVER_STARTED = "never_started"
    INFRASTRUCTURE_GONE = "infrastructure_gone"
    ORPHANED_INFRASTRUCTURE = "orphaned_infrastructure"
    NOT_ATTACHABLE = "not_attachable"
    UNKNOWN = "unknown"


class CallKind(StrEnum):
    """What sort of call a thread is blocked in."""

    SLEEP = "sleep"
    NETWORK_IO = "network_io"
    DATABASE = "database"
    SUBPROCESS = "subprocess"
    LOCK = "lock"
    FILE_IO = "file_io"
    CPU = "cpu"
    OTHER = "other"


class Role(StrEnum):
    """What one process is to its run."""

    #: The flow engine (`python -m prefect.engine`): the process the Runner signals.
    ENGINE = "engine"
    #: A process the flow started (or one that outlived it), carrying the run's id.
    CHILD = "child"
    #: The Runner's subprocess that runs `on_cancellation` / `on_crashed` hooks (3.9+).
    HOOK = "hook"
    #: A Runner or worker of the run's pool (sampled when nothing of the run is left).
    RUNNER = "runner"
    #: A container's PID 1 that is neither the engine nor the Runner (a shell, a wrapper).
    PID1 = "pid1"
    #: A program between the Runner and the engine that starts it and waits (`uv run`,
    #: Prefect 3.9's launcher when the flow's project declares prefect): the run's PID.
    LAUNCHER = "launcher"


class InfraKind(StrEnum):
    """Where a run lives, as its `infrastructure_pid` tells."""

    NONE = "none"
    PROCESS = "process"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    ECS = "ecs"
    UNKNOWN = "unknown"


class StateType(StrEnum):
    """Prefect's state types (`StateType` in prefect.client.schemas.objects)."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    #: A state the API did not name (or a type newer than this tool).
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: object) -> StateType:
        """The state type named by `value`; UNKNOWN for anything else."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


#: State types a run does not leave by itself: its processes should be gone.
FINAL_STATES = frozenset({StateType.CANCELLED, StateType.COMPLETED, StateType.FAILED, StateType.CRASHED})


class AttachMode(StrEnum):
    """How a container's processes are sampled."""

    #: By host PID, from here (the doctor shares the engine's host and PID namespace).
    HOST = "host"
    #: From a container that shares the target's PID namespace, with SYS_PTRACE.
    SIDECAR = "sidecar"
    #: Not sampled: not running, or not attachable.
    NONE = "none"


class SampleFailure(StrEnum):
    """Why sampling one process gave no stacks."""

    PERMISSION_DENIED = "permission_denied"
    GONE = "gone"
    NOT_PYTHON = "not_python"
    TIMEOUT = "timeout"
    OTHER = "other"


class HandlerKind(StrEnum):
    """Which SIGTERM handler the interpreter has installed (read from its memory, proc/interpreter.py)."""

    #: SIG_DFL: the kernel's default action, the process ends.
    DEFAULT = "default"
    #: SIG_IGN: the signal is discarded.
    IGNORE = "ignore"
    #: Prefect's own bridge, which raises `TerminationSignal` in the main thread.
    PREFECT = "prefect"
    #: Any other Python callable: the flow's (or a library's) own handler.
    OTHER = "other"


@dataclass(frozen=True)
class SigtermHandler:
    """The Python-level SIGTERM handler of an interpreter, as read from its memory."""

    kind: HandlerKind
    #: The callable's qualified name (`_prefect_sigterm_handler`, `main.<locals>.<lambda>`).
    qualname: str | None = None
    #: Where it is defined: its code object's file and first line.
    filename: str | None = None
    line: int | None = None

    def where(self) -> str:
        """`qualname at file:line`, as far as known."""
        place = f"{self.filename}:{self.line}" if self.filename and self.line else self.filename or ""
        name = self.qualname or str(self.kind)
        return f"{name} at {place}" if place else name


@dataclass(frozen=True)
class SwallowingExcept:
    """An `except` in the flow's code, around a line of its main thread, that catches a termination
    signal (`BaseException`, a bare `except:`, `TerminationSignal`, `ExternalSignal`) and does not
    re-raise it: Prefect's SIGTERM handler raises there, and the flow goes on."""

    filename: str
    #: The `except` clause's line, and its text.
    line: int
    code: str | None
    #: What it catches, as written (`BaseException`, `except:`, `TerminationSignal`).
    catches: str
    #: The function whose frame is inside the `try`, and that frame's line.
    function: str
    frame_line: int
    #: The line of a `for`/`while` around the `try` in the same function: the flow goes on to the
    #: next item (None: no loop; the flow goes on after the `try`).
    loop_line: int | None = None


class Delivered(StrEnum):
    """Whether a SIGTERM reached the flow process, judged on every sign the doctor could read."""

    YES = "delivered"
    NO = "not_delivered"
    UNKNOWN = "unknown"


class Absorber(StrEnum):
    """Where a SIGTERM that came went, when the process did not end on it."""

    #: SIGTERM set to SIG_IGN.
    SIG_IGN = "sig_ign"
    #: SIGTERM blocked in the main thread's signal mask.
    BLOCKED = "blocked"
    #: A SIGTERM handler other than Prefect's ran and returned.
    HANDLER_RETURNS = "handler_returns"
    #: Prefect's handler raised `TerminationSignal`, and an `except` in the flow caught it.
    EXCEPTION_SWALLOWED = "exception_swallowed"
    #: The handler is due but another thread holds the GIL, so the main thread cannot run it.
    GIL_HELD = "gil_held"
    #: The main thread is inside a C call that does not return to the interpreter.
    C_CALL = "c_call"
    #: PID 1 of the container has no handler: the kernel dropped it.
    PID1_DROPPED = "pid1_dropped"


@dataclass(frozen=True)
class Delivery:
    """The judgement on whether a SIGTERM came, with the signs for and against it."""

    sigterm: Delivered
    #: Where it went, where the process did not end on it (None: unknown, or none came).
    absorbed_by: Absorber | None = None
    #: Facts that show a SIGTERM came (a `kill` event, the pod Terminating, the pending flag, a log line).
    signs_for: tuple[str, ...] = ()
    #: Facts that show none came (the control channel still open, the pending flag clear in a C call).
    signs_against: tuple[str, ...] = ()
    #: Sources that could speak but could not be read here (the handler of a CPython 3.12+ target).
    unread: tuple[str, ...] = ()


#: A worker's heartbeat interval when the API does not give one (PREFECT_WORKER_HEARTBEAT_SECONDS).
DEFAULT_HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class WorkerInfo:
    """A worker of the run's work pool, as the API reports it."""

    name: str
    status: str | None
    last_heartbeat_time: str | None
    seconds_since_heartbeat: float | None
    #: How often it heartbeats (`heartbeat_interval_seconds`; Prefect's default is 30 s).
    heartbeat_interval_seconds: float | None = None

    @property
    def heartbeat_is_stale(self) -> bool:
        """More than 1.5 intervals without a heartbeat: the API may still say ONLINE for up to
        three missed ones, but a live worker would have sent one by now."""
        interval = self.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS
        return self.seconds_since_heartbeat is not None and self.seconds_since_heartbeat > 1.5 * interval


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


@dataclass(frozen=True)
class Frame:
    """One stack frame as py-spy reports it."""

    function: str
    filename: str
    line: int
    module: str | None = None
    #: The source line, read from the target's filesystem when available.
    code: str | None = None
    #: True for a native (C) frame from `py-spy dump --native`.
    native: bool = False
    #: Local variables (only with --locals; secret-looking names redacted).
    locals: dict[str, str] | None = None


@dataclass(frozen=True)
class SocketPeer:
    """A TCP connection a process holds, with its remote end."""

    fd: int
    local: str
    remote: str
    state: str


class ResourceKind(StrEnum):
    """What a blocked syscall waits on, as the kernel shows it (/proc/PID/fd, fdinfo, net)."""

    FIFO = "fifo"
    PIPE = "pipe"
    SOCKET = "socket"
    UNIX_SOCKET = "unix_socket"
    FILE = "file"
    EVENTFD = "eventfd"
    EPOLL = "epoll"
    CHILD = "child"
    OTHER = "other"


@dataclass(frozen=True)
class Resource:
    """The resource behind a blocked call: "opening FIFO /data/in.fifo, which no process has
    open for writing", "reading a pipe whose writer is PID 812 (sleep 3600)"."""

    kind: ResourceKind
    #: One phrase for people, naming the resource and what is on its other end.
    description: str
    fd: int | None = None
    path: str | None = None
    #: The remote end of a TCP connection ("10.0.3.7:5432") and its usual service.
    peer: str | None = None
    service: str | None = None
    #: The processes on the other end (a pipe's or FIFO's writers, a waited-for child).
    peer_pids: tuple[int, ...] = ()
    #: The filesystem type of a file's mount (nfs4, fuse.sshfs, ext4, ...).
    mount_type: str | None = None


@dataclass(frozen=True)
class KernelThread:
    """What /proc says about one thread (task) of a process."""

    tid: int
    name: str
    state: str
    wchan: str | None
    syscall: int | None
    syscall_name: str | None
    sig_blocked: int = 0
    sig_pending: int = 0
    #: The blocked syscall's first arguments (/proc/PID/task/TID/syscall), when in one.
    syscall_args: tuple[int, ...] = ()
    #: What that syscall waits on, where it could be told (filled in after sampling).
    resource: Resource | None = None


@dataclass(frozen=True)
class ProcSnapshot:
    """What /proc says about one process at one moment."""

    pid: int
    ppid: int
    cmdline: tuple[str, ...]
    comm: str
    state: str
    #: PID as seen in the innermost PID namespace (1 means PID 1 of a container).
    ns_pid: int
    sig_ignored: int
    sig_caught: int
    sig_blocked: int
    sig_pending: int
    shared_pending: int
    threads: tuple[KernelThread, ...]
    sockets: tuple[SocketPeer, ...]
    children: tuple[int, ...]
    flow_run_id: str | None
    start_time_ticks: int
    #: False when /proc/PID/environ could not be read (another user's process, no ptrace
    #: rights): then `flow_run_id` is unknown, not absent.
    environ_readable: bool = True
    #: PREFECT__CONTROL_PORT from its environment: the Runner's control channel (Prefect 3.9+),
    #: over which the cancel intent comes just before SIGTERM.
    control_port: int | None = None
    #: Its process group: a Runner's group SIGTERM (Prefect 3.9 default launches) reaches
    #: the children that stayed in the flow's group, not those that left it.
    pgid: int | None = None


@dataclass(frozen=True)
class ThreadSample:
    """One thread of one py-spy dump, merged with the kernel's view of it."""

    thread_id: int
    native_id: int | None
    name: str | None
    active: bool
    owns_gil: bool
    frames: tuple[Frame, ...]
    native_frames: tuple[str, ...] = ()
    kernel: KernelThread | None = None


@dataclass(frozen=True)
class ProcessSample:
    """Repeated samples of one process: the kernel view and py-spy's threads."""

    pid: int
    role: Role
    proc: ProcSnapshot | None
    #: One entry per successful py-spy dump, each a tuple of threads.
    dumps: tuple[tuple[ThreadSample, ...], ...]
    native: bool
    errors: tuple[str, ...] = ()
    python: bool = True
    #: Why no stack could be taken at all (None when some dump succeeded or none was tried).
    failure: SampleFailure | None = None
    #: Whether the interpreter holds a SIGTERM it has not handled yet (CPython's own flag,
    #: read from the process's memory); None where it cannot be read (see proc/interpreter.py).
    sigterm_pending: bool | None = None
    #: The interpreter's SIGTERM handler (None where it cannot be read, see sample/handler.py).
    sigterm_handler: SigtermHandler | None = None
    #: `except` clauses in the flow's code that would catch Prefect's `TerminationSignal` around
    #: the main thread's current line and not re-raise it (sample/excepts.py).
    swallowing: tuple[SwallowingExcept, ...] = ()


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


class PodAttach(StrEnum):
    """How a pod's processes are sampled (`PodFacts.attach`)."""

    #: From the pod's node: the container's host PIDs found through /proc/*/cgroup.
    NODE = "node"
    #: From an ephemeral container added to the pod (pods/ephemeralcontainers), read through pods/log.
    EPHEMERAL = "ephemeral"
    #: Not sampled: not running, gone, or not attachable.
    NONE = "none"


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


@dataclass(frozen=True)
class Target:
    """Where a run lives, and how it was found."""

    kind: InfraKind
    description: str
    pid: int | None = None
    host: str | None = None
    container_id: str | None = None
    found_by: str = "infrastructure_pid"
    processes: tuple[ProcessSample, ...] = ()
    #: The run's Docker container as the engine reports it (kind "docker" only).
    container: ContainerInfo | None = None
    #: The run's Kubernetes Job and pod (kind "kubernetes" only).
    pod: PodFacts | None = None


@dataclass(frozen=True)
class BlockingCall:
    """What the flow is doing right now: the call that holds cancellation up."""

    kind: CallKind
    function: str
    filename: str | None
    line: int | None
    code: str | None
    thread_name: str | None
    native: str | None
    on_event_loop: bool
    #: True if the same call was on top in every sample; False means it moved.
    stable: bool = True
    #: The process the thread belongs to.
    pid: int | None = None
    #: py-spy's id of the thread (`ThreadSample.thread_id`): names may repeat or be missing.
    thread_id: int | None = None
    #: What the call waits on, read from the kernel (fd, FIFO, pipe writer, socket peer, mount).
    resource: Resource | None = None


@dataclass(frozen=True)
class Verdict:
    """The diagnosis of one run: cause, blocking call, and what to do."""

    cause: Cause
    summary: str
    confidence: float
    blocking_call: BlockingCall | None = None
    evidence: tuple[str, ...] = ()
    remediation: tuple[str, ...] = ()
    #: The first fix in a few words, for tables (the full fixes are `remediation`).
    short_fix: str = ""
    #: What ends the run now, as shell commands to run in order on this host (empty where
    #: nothing safe can be done from here): stop its processes, then mark it Cancelled.
    stop_now: tuple[str, ...] = ()
    #: Secondary findings: what will hold the cancel up next, once the first cause is fixed
    #: (e.g. a C call that will keep a SIGTERM pending, when no SIGTERM has come yet).
    also: tuple[Verdict, ...] = ()
    #: Whether a SIGTERM came, and where it went: the signs weighed (None where no process was read).
    delivery: Delivery | None = None


class TimelineSource(StrEnum):
    """Where a dated fact of a run's timeline was read."""

    STATE = "state"
    WORKER = "worker"
    PROCESS = "process"
    LOG = "log"


@dataclass(frozen=True)
class TimelineEntry:
    """One dated fact of a run's story: the order of events, not only the conclusion."""

    #: ISO 8601 time, UTC, to the second.
    at: str
    what: str
    source: TimelineSource


@dataclass(frozen=True)
class Published:
    """Where a verdict read from the fleet's events comes from: another host's doctor (fleet.py)."""

    #: The host whose doctor diagnosed the run (its `prefect-cancel-doctor.host.<host>` resource).
    host: str
    #: When it published the verdict (ISO 8601, UTC).
    published_at: str
    #: Seconds between its publication and this report.
    age_seconds: float | None
    #: Whether that host found something of the run (processes, a container) to sample.
    found_there: bool
    #: The version of the doctor that published it.
    doctor_version: str | None
    #: The event's id (`prefect-cancel-doctor.verdict`).
    event_id: str


@dataclass(frozen=True)
class Diagnosis:
    """One run: what the API said, where it lives, and the verdict."""

    flow_run: FlowRunRef | None
    target: Target | None
    verdict: Verdict
    errors: tuple[str, ...] = ()
    #: When the run entered each state, its worker's last heartbeat, when its processes
    #: started, what its logs said about the cancel; oldest first.
    timeline: tuple[TimelineEntry, ...] = ()
    #: The run's page in the Prefect UI (None for a process inspected without the API).
    ui_url: str | None = None
    #: Set when the verdict is another host's, read from its published event (None: diagnosed here).
    published: Published | None = None

    @property
    def needs_attention(self) -> bool:
        """Stuck in Cancelling, an orphan, or a process inspected directly."""
        if self.flow_run is None or self.flow_run.state_type == StateType.CANCELLING:
            return True
        return bool(self.target and self.target.processes)


@dataclass(frozen=True)
class Report:
    """Everything one command found."""

    api_url: str | None
    generated_at: str
    runs: tuple[Diagnosis, ...]
    errors: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @property
    def needs_attention(self) -> bool:
        """True when a run is stuck in Cancelling or something of a finished run still runs."""
        return any(d.needs_attention for d in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: the model as plain dicts, enums as their values."""
        document: dict[str, Any] = _plain(self)
        return document


def _latest_threads(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """Every thread of the run's processes as the last sample saw it, with its pid and role.

    The full series of samples is under `target.processes[].threads`; this flat
    view is what a script usually wants.
    """
    processes = diagnosis.target.processes if diagnosis.target else ()
    return [
        {"pid": process.pid, "role": process.role, **_plain(thread)}
        for process in processes
        if process.dumps
        for thread in process.dumps[-1]
    ]


#: Types copied as they are. Exact types: a `str` enum (Cause) must become its value.
_SCALARS = frozenset({str, int, float, bool, type(None)})


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass, None for any other class (looked up once a class)."""
    if cls not in _FIELD_NAMES:
        is_data = dataclasses.is_dataclass(cls)
        _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls)) if is_data else None
    return _FIELD_NAMES[cls]


def to_plain(value: Any) -> Any:
    """A model object (or a dataclass, tuple, list or dict holding some) as JSON-ready plain values."""
    return _plain(value)


def _plain(value: Any) -> Any:
    # A report of 500 runs is ~20,000 values: the common cases come first.
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _field_names(kind)
    if names is not None:
        out = {name: _plain(getattr(value, name)) for name in names}
        if isinstance(value, ProcessSample):
            out["threads"] = out.pop("dumps")
        if isinstance(value, Diagnosis):
            out["threads"] = _latest_threads(value)
            if value.published is None:  # only a verdict read from another host's event says where from
                del out["published"]
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


__all__ = [
    "CONTAINER_NOT_FOUND",
    "FINAL_STATES",
    "Absorber",
    "AttachMode",
    "BlockingCall",
    "CallKind",
    "Cause",
    "ContainerEvent",
    "ContainerInfo",
    "ContainerProcess",
    "ContainerStats",
    "Delivered",
    "Delivery",
    "Diagnosis",
    "FlowRunRef",
    "Frame",
    "HandlerKind",
    "InfraKind",
    "KernelThread",
    "LabelValue",
    "PodAttach",
    "PodEventFact",
    "PodFacts",
    "ProcSnapshot",
    "ProcessSample",
    "Published",
    "Report",
    "Resource",
    "ResourceKind",
    "Role",
    "SampleFailure",
    "SigtermHandler",
    "SocketPeer",
    "StateType",
    "StrEnum",
    "SwallowingExcept",
    "Target",
    "ThreadSample",
    "TimelineEntry",
    "TimelineSource",
    "Verdict",
    "WorkerInfo",
]
