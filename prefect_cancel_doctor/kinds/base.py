"""The seam every kind of target plugs into: what the engine, the rules and `resolve` ask of a kind.

A kind of target (a local process, a Docker container, a Kubernetes pod; next an ECS task) owns
everything about it: which `infrastructure_pid` forms are its, how to find the run from here,
how to sample it when the host's PIDs do not reach it, what only it can say about the run (a
container's exit code, a pod's finalizers), what ends it now, and how `resolve` stops it.

How to add a kind (say ECS tasks):

1. a member of `model.InfraKind`;
2. a package ``kinds/<name>/`` whose ``kind.py`` has one class satisfying `Kind`. Import its
   client or SDK inside the methods, never at the top: the registry imports every ``kind.py``,
   and a scan with no run of this kind must load none of it (`tests/kubernetes/test_import_cost.py`);
3. an instance of it in `kinds.registry.KINDS`, placed where its `parse` must be tried.

The engine, the rules, the renderers and `resolve` then reach it through the registry; none of
them names a kind. Everything a kind returns is the report model's (`Location`, `Target`,
`Verdict`) or plain text, so the floors above read it without knowing the kind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from prefect_cancel_doctor.core.progress import ProgressFn
from prefect_cancel_doctor.model import (
    Cause,
    ContainerInfo,
    FlowRunRef,
    FoundBy,
    InfraKind,
    PodFacts,
    ProcessSample,
    ProcSnapshot,
    Role,
    Target,
    TaskFacts,
    TimelineEntry,
    Verdict,
)

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_records import Deployment, FlowRun, LogLine, State
    from prefect_cancel_doctor.core.options import Options

_T = TypeVar("_T")

#: How long a SIGKILLed process, or a killed container, may take to go (`resolve`).
KILL_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class InfraRef:
    """A parsed `infrastructure_pid`."""

    kind: InfraKind
    raw: str | None
    pid: int | None = None
    host: str | None = None
    container_id: str | None = None
    docker_url: str | None = None
    namespace: str | None = None
    job: str | None = None

    def describe(self, started: bool = False) -> str:
        """Where the run lives, in words (`started`: the run has a start_time)."""
        from prefect_cancel_doctor.kinds.registry import kind_of

        return kind_of(self.kind).describe(self, started)


@dataclass(frozen=True)
class Location:
    """The processes of one run found on this host, with their roles."""

    kind: InfraKind
    description: str
    #: The run's processes here and what each is to the run (see `Role`).
    pids: tuple[tuple[int, Role], ...] = ()
    #: The Runner that launched the engine, if it is alive here.
    runner_pid: int | None = None
    #: Set when the target cannot be inspected from here, with what would work.
    unreachable: str | None = None
    notes: tuple[str, ...] = ()
    container_id: str | None = None
    #: The run's Docker container as the engine reports it (None for other kinds). Set also
    #: when the container has exited or is gone, so that the rules can say so; in "sidecar"
    #: attach mode `pids` is empty and `container.processes` lists namespace PIDs instead.
    container: ContainerInfo | None = None
    #: What shows this host launched the run, when no process of it is left: Prefect 3.9's
    #: workspace supervisor config (left behind when its worker died), or an infrastructure_pid
    #: "<host>:<pid>" naming this host.
    launched_here: str | None = None
    #: How the engine was found: by the run's infrastructure_pid, its id in a process's environment,
    #: or its Runner (`serve`).
    found_by: FoundBy = FoundBy.INFRASTRUCTURE_PID
    #: The run's Kubernetes Job and pod (None for other kinds); with attach "ephemeral", `pids`
    #: is empty and the engine samples the pod from an ephemeral container.
    pod: PodFacts | None = None
    #: The run's ECS task (None for other kinds).
    task: TaskFacts | None = None


@dataclass(frozen=True)
class Here:
    """What every locator may use, read once a scan: this host's run processes, the options, and
    what the engine read of the API beforehand (a locator never calls the API)."""

    #: PREFECT__FLOW_RUN_ID → this host's processes carrying it (one walk of /proc).
    index: dict[str, list[int]]
    options: Options
    #: The deployments of the runs that may be served (`flow.serve()`), by id, read beforehand.
    deployments: dict[str, Deployment] = field(default_factory=dict)
    _shared: dict[str, object] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def shared(self, name: str, make: Callable[[], _T]) -> _T:
        """A kind's state for the whole scan (a client, a cache), made on first use and kept by name
        (locators may run on several threads)."""
        with self._lock:
            if name not in self._shared:
                self._shared[name] = make()
            return cast(_T, self._shared[name])


@dataclass
class Job:
    """One run on its way through a scan: located, then sampled, then diagnosed."""

    run: FlowRunRef | None
    location: Location
    samples: list[ProcessSample]
    #: The Runner as the kind's own sampler saw it (from inside the target's namespace).
    runner: ProcSnapshot | None = None
    notes: list[str] = field(default_factory=list)
    #: The run's state history and its newest log lines (runs diagnosed here), for its timeline.
    history: list[State] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    #: Whether the run's logs were read (an unreadable or unasked log is a source not read).
    logs_read: bool = False


@dataclass(frozen=True)
class ContainerView:
    """A run's container as the rules see it, whatever runs it (the Docker engine, a pod)."""

    #: "container 0123456789ab", "container prefect-job of pod etl-x7k2p".
    name: str
    command: tuple[str, ...]
    #: PID 1's command as the engine reports it (() when only /proc can tell).
    pid1_command: tuple[str, ...]
    #: The engine put its own init as PID 1 (`docker run --init`), which forwards signals.
    has_init: bool
    #: What sends the container its SIGTERM ("`docker stop`", "the kubelet's SIGTERM (pod deletion)").
    stopped_by: str


@dataclass(frozen=True)
class StopNow:
    """What ends a run's target now, as shell commands to run in order, and what they leave done."""

    commands: tuple[str, ...]
    done: str


@dataclass(frozen=True)
class EngineProcess:
    """A flow engine by its host PID, with its start time (to re-check before signalling it)."""

    pid: int
    start_time_ticks: int
    command: str


#: How `resolve` waits between a stopper's steps: `wait(what, seconds, done)` until `done()` or the
#: time is up; returns `done()`.
Wait = Callable[[str, float, Callable[[], bool]], bool]
#: How a stopper records a step it took, for the action log ("docker stop").
Record = Callable[[str], None]


class Stopper(Protocol):
    """How `resolve` stops a target that the kind stops as a whole (a container), after the flow
    engine got its SIGTERM by its host PID."""

    def engines_by_host_pid(self) -> list[EngineProcess] | None:
        """The flow engine(s) to SIGTERM first, by host PID, where the samples hold the target's own
        namespace PIDs; None: the samples' PIDs are the host's."""
        ...

    @property
    def what(self) -> str:
        """How the action log names the target ("container 0123456789ab")."""
        ...

    @property
    def name(self) -> str:
        """How a step's line names it ("0123456789ab")."""
        ...

    def steps(self, grace: float, engine_pid: int | None) -> list[str]:
        """The stop in words, one line a step, for the plan."""
        ...

    def stop(self, grace: float, wait: Wait, record: Record, engine_signalled: bool) -> bool:
        """Stop it step by step (`record(step)` after each, `wait(what, seconds, done)` between);
        whether it still runs at the end."""
        ...


class Kind(Protocol):
    """One kind of target. Methods a kind has nothing to say for return None or ()."""

    infra: InfraKind
    #: Whether its runs are located together on the scan's thread pool (each costs API requests).
    concurrent: bool

    def parse(self, value: str) -> InfraRef | None:
        """The `InfraRef` of an `infrastructure_pid` written by this kind's worker, else None."""
        ...

    def describe(self, ref: InfraRef, started: bool) -> str:
        """Where the run lives, in words (`started`: the run has a start_time)."""
        ...

    def prepare(self, runs: list[FlowRun], here: Here) -> set[str]:
        """Called once a scan with this kind's runs, before any is located (on one thread: make
        shared clients here); returns the ids of the deployments `locate` will read in
        `here.deployments` (the engine reads them, together)."""
        ...

    def may_still_run(self, run: FlowRun, here: Here) -> bool:
        """Whether a final-state run of this kind may still run where no process here carries its
        id (it is then located, and reported if `still_there`)."""
        ...

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        """Find where the run lives from here; never samples, never raises for one run."""
        ...

    def still_there(self, location: Location) -> bool:
        """Something of the run still runs (for a final-state run: it is an orphan)."""
        ...

    def samples_apart(self, location: Location) -> bool:
        """Whether this kind samples the location itself (`sample`): its PIDs are the target's own
        namespace's, not this host's, and cannot be re-read from this host's /proc."""
        ...

    def sample(self, jobs: list[Job], here: Here, progress: ProgressFn) -> None:
        """Sample the jobs whose location `samples_apart`, filling `samples`, `runner` and `notes`
        (and `location`, where sampling finds it unreachable after all); `here` holds the options
        and what `prepare` and `locate` made (a client) for the whole scan."""
        ...

    def gone(self, target: Target, notes: tuple[str, ...]) -> Verdict | None:
        """The verdict for a Cancelling run none of whose processes runs any more, where only this
        kind can say why (an exited container, a deleted Job); None: the generic rule decides."""
        ...

    def facts(self, target: Target, cause: Cause, runner_runs: bool) -> tuple[str, ...]:
        """Evidence lines only this kind has, added to every verdict of its runs."""
        ...

    def in_container(self, target: Target) -> ContainerView | None:
        """The run's container, for the rules that read containers of any kind; None: not in one."""
        ...

    def short_fix(self, target: Target, cause: Cause) -> str | None:
        """The few words of the summary's fix where this kind's differ from a process's."""
        ...

    def fixes(self, target: Target, cause: Cause) -> tuple[str, ...] | None:
        """The verdict's fixes where this kind's replace the cause's own (say, where to run the
        doctor for a target it cannot sample from here); None: the cause's."""
        ...

    def timeline(self, target: Target) -> tuple[TimelineEntry, ...]:
        """Dated facts only this kind has (an ECS task's stop request), for the run's timeline."""
        ...

    def stop_now(self, target: Target, cause: Cause) -> StopNow | None:
        """The commands that end the target now, where the kind stops it as a whole; None: end the
        run's processes by PID."""
        ...

    def stopper(self, target: Target) -> Stopper | None:
        """How `resolve` stops the target, where the kind stops it as a whole; None: by PID."""
        ...


class ProcessesOnly:
    """Defaults for a kind whose run is its processes: nothing of its own to sample, say or stop."""

    concurrent = False

    def prepare(self, runs: list[FlowRun], here: Here) -> set[str]:
        return set()

    def may_still_run(self, run: FlowRun, here: Here) -> bool:
        return False

    def still_there(self, location: Location) -> bool:
        return bool(location.pids)

    def samples_apart(self, location: Location) -> bool:
        return False

    def sample(self, jobs: list[Job], here: Here, progress: ProgressFn) -> None:
        return None

    def gone(self, target: Target, notes: tuple[str, ...]) -> Verdict | None:
        return None

    def facts(self, target: Target, cause: Cause, runner_runs: bool) -> tuple[str, ...]:
        return ()

    def in_container(self, target: Target) -> ContainerView | None:
        return None

    def short_fix(self, target: Target, cause: Cause) -> str | None:
        return None

    def fixes(self, target: Target, cause: Cause) -> tuple[str, ...] | None:
        return None

    def timeline(self, target: Target) -> tuple[TimelineEntry, ...]:
        return ()

    def stop_now(self, target: Target, cause: Cause) -> StopNow | None:
        return None

    def stopper(self, target: Target) -> Stopper | None:
        return None
