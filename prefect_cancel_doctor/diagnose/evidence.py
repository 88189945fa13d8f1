"""Everything read about one run: the input of every rule and of the delivery judgement."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prefect_cancel_doctor.clients.prefect_records import LogLine
from prefect_cancel_doctor.model import (
    RUN_ROLES,
    ContainerInfo,
    Delivery,
    FlowRunRef,
    PodFacts,
    ProcessSample,
    ProcSnapshot,
    Role,
    StateType,
    Target,
)


@dataclass(frozen=True)
class Evidence:
    """Everything read about one run, the input of every rule."""

    run: FlowRunRef | None
    target: Target | None
    #: Why the target cannot be inspected from here, if it cannot.
    unreachable: str | None = None
    #: The Runner (process worker / `serve` / `prefect flow-run execute`) that launched the engine.
    runner: ProcSnapshot | None = None
    #: Facts found while locating (stale infrastructure_pid, PID reuse, ...).
    notes: tuple[str, ...] = ()
    #: "host:port" of the Prefect API: every flow process talks to it, so it is no finding.
    api_peer: str | None = None
    #: What shows this host launched the run (`Location.launched_here`).
    launched_here: str | None = None
    #: The run's newest log lines, as the API gave them (`logs_read`: whether it was asked).
    logs: tuple[LogLine, ...] = ()
    logs_read: bool = False
    #: The engine's parent when no Runner owns it: what adopted it (PID 1, an init, a subreaper).
    adopter: ProcSnapshot | None = None

    @functools.cached_property
    def delivery(self) -> Delivery | None:
        """Whether a SIGTERM came (`diagnose.delivery.judge`), weighed once per run: the rules that
        lean on it and the closing check share it."""
        from prefect_cancel_doctor.diagnose.delivery import judge  # it reads Evidence: imported here

        return judge(self)

    @property
    def processes(self) -> tuple[ProcessSample, ...]:
        """Live processes of the run itself: the engine, its launcher and its children (not Runners)."""
        sampled = self.target.processes if self.target else ()
        return tuple(p for p in sampled if p.role in RUN_ROLES)

    @property
    def hooks(self) -> tuple[ProcessSample, ...]:
        """The Runner's on_cancellation hook subprocesses for this run."""
        sampled = self.target.processes if self.target else ()
        return tuple(p for p in sampled if p.role == Role.HOOK)

    @property
    def runners(self) -> tuple[ProcessSample, ...]:
        """Local Runners (workers) of the run's pool, sampled when nothing of the run is left."""
        sampled = self.target.processes if self.target else ()
        return tuple(p for p in sampled if p.role == Role.RUNNER)

    @property
    def container(self) -> ContainerInfo | None:
        """The run's Docker container, for Docker runs."""
        return self.target.container if self.target else None

    @property
    def pod(self) -> PodFacts | None:
        """The run's Kubernetes Job and pod, for Kubernetes runs."""
        return self.target.pod if self.target else None

    @property
    def pid1(self) -> ProcessSample | None:
        """A container's PID 1 when it is neither the engine nor the Runner (a shell, a wrapper)."""
        return next((p for p in self.processes if p.role == Role.PID1), None)

    @property
    def engine(self) -> ProcessSample | None:
        """The flow engine process, if it still runs."""
        return next((p for p in self.processes if p.role == Role.ENGINE), None)

    @property
    def children(self) -> tuple[ProcessSample, ...]:
        """Processes the flow started (or that outlived it)."""
        return tuple(p for p in self.processes if p.role == Role.CHILD)

    @property
    def state_type(self) -> StateType | None:
        """The run's state type, if the API was read."""
        return self.run.state_type if self.run else None


__all__ = ["Evidence"]
