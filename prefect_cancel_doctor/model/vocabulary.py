"""The model's closed vocabularies: `str` enums whose values are what the JSON says."""

from __future__ import annotations

import enum
import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, enum.Enum):
        """`enum.StrEnum` of Python 3.11: members are their values, also in f-strings."""

        def __str__(self) -> str:
            return str(self.value)


#: A label's value on a flow run (Prefect's `KeyValueLabels`).
LabelValue = str | int | float | bool | None


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


#: The processes of the run itself (not its Runner, not a hook subprocess): what ends with it.
RUN_ROLES = frozenset({Role.ENGINE, Role.LAUNCHER, Role.CHILD, Role.PID1})


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


class WorkerStatus(StrEnum):
    """A worker's status as the API reports it (Prefect's `WorkerStatus`)."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    #: A status the API did not name (or one newer than this tool).
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: str | None) -> WorkerStatus | None:
        """The status named by `value`; None where the API gave none, UNKNOWN for anything else."""
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class FoundBy(StrEnum):
    """How the doctor found where a run lives (`Target.found_by`)."""

    #: The run's `infrastructure_pid` names it.
    INFRASTRUCTURE_PID = "infrastructure_pid"
    #: A process whose environment holds the run's id.
    FLOW_RUN_ID = "PREFECT__FLOW_RUN_ID"
    #: Through the Runner of `flow.serve()`: its runs carry no id in their environment.
    SERVE = "serve"


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
    #: Prefect's handler raised `TerminationSignal`, and the flow's cleanup on its way out (a
    #: `finally`, an `except` that catches it, a `with`'s exit) blocks.
    CLEANUP_BLOCKS = "cleanup_blocks"
    #: PID 1 of the container has no handler: the kernel dropped it.
    PID1_DROPPED = "pid1_dropped"


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


class PodAttach(StrEnum):
    """How a pod's processes are sampled (`PodFacts.attach`)."""

    #: From the pod's node: the container's host PIDs found through /proc/*/cgroup.
    NODE = "node"
    #: From an ephemeral container added to the pod (pods/ephemeralcontainers), read through pods/log.
    EPHEMERAL = "ephemeral"
    #: Not sampled: not running, gone, or not attachable.
    NONE = "none"


class TimelineSource(StrEnum):
    """Where a dated fact of a run's timeline was read."""

    STATE = "state"
    WORKER = "worker"
    PROCESS = "process"
    LOG = "log"
    #: What the run's infrastructure's own API dates (an ECS task's start, stop request, stop).
    INFRASTRUCTURE = "infrastructure"
