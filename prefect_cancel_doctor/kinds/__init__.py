"""Where a run lives: parse `infrastructure_pid`, dispatch to one module per kind.

Forms written by Prefect's workers (see docs/how-cancellation-works.md, section 4):

- process worker / runner: ``"3055"`` (older: ``"hostname:3055"``)
- Docker worker: ``"<docker base url>:<container id>"`` (split on the last ``:``)
- Kubernetes worker: ``"<namespace>:<job name>"`` (before 3.4.1 ``"<cluster uid>:<ns>:<job>"``)
- ECS worker: ``"<cluster>::<task arn>"``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prefect_cancel_doctor.model import (  # re-exported: the report model holds them
    CONTAINER_NOT_FOUND,
    ContainerInfo,
    ContainerProcess,
    ContainerStats,
    InfraKind,
    PodFacts,
    Role,
)

_HEX_ID = re.compile(r"^[0-9a-f]{12,64}$")
#: A PID as Linux writes it: ASCII digits, at most 7 of them (pid_max is at most 2^22).
_PID = re.compile(r"[0-9]{1,7}")


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
        if self.kind == InfraKind.PROCESS:
            return f"process {self.pid} on host {self.host}" if self.host else f"process {self.pid}"
        if self.kind == InfraKind.DOCKER:
            return f"Docker container {(self.container_id or '?')[:12]}"
        if self.kind == InfraKind.KUBERNETES:
            return f"Kubernetes job {self.namespace}/{self.job}"
        if self.kind == InfraKind.ECS:
            return f"ECS task {self.job}"
        if self.kind == InfraKind.NONE:
            return (
                "started, no infrastructure_pid recorded" if started else "no infrastructure (never started)"
            )
        return f"infrastructure_pid {self.raw!r}"


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
    #: The file on this host that shows this host launched the run (Prefect 3.9's workspace
    #: supervisor config, left behind when its worker died), when no process of it is left.
    launched_here: str | None = None
    #: How the engine was found: "infrastructure_pid", "PREFECT__FLOW_RUN_ID" or "serve" (its Runner).
    found_by: str = "infrastructure_pid"
    #: The run's Kubernetes Job and pod (None for other kinds); with attach "ephemeral", `pids`
    #: is empty and the engine samples the pod from an ephemeral container.
    pod: PodFacts | None = None


def parse_infrastructure_pid(raw: str | None) -> InfraRef:
    """Parse the forms above; anything else is kind "unknown"."""
    value = (raw or "").strip()
    if not value:
        return InfraRef(InfraKind.NONE, raw)
    if _PID.fullmatch(value):
        return InfraRef(InfraKind.PROCESS, raw, pid=int(value))
    if "::" in value:
        cluster, _, task = value.partition("::")
        return InfraRef(InfraKind.ECS, raw, namespace=cluster, job=task)
    head, _, tail = value.rpartition(":")
    if "://" in head or (_HEX_ID.match(tail) and head):
        return InfraRef(InfraKind.DOCKER, raw, container_id=tail, docker_url=head)
    if _PID.fullmatch(tail) and head and "/" not in head and head.count(":") == 0:
        return InfraRef(InfraKind.PROCESS, raw, pid=int(tail), host=head)
    parts = value.split(":")
    if len(parts) in (2, 3) and all(parts):
        return InfraRef(InfraKind.KUBERNETES, raw, namespace=parts[-2], job=parts[-1])
    return InfraRef(InfraKind.UNKNOWN, raw)


__all__ = [
    "CONTAINER_NOT_FOUND",
    "ContainerInfo",
    "ContainerProcess",
    "ContainerStats",
    "InfraRef",
    "Location",
    "parse_infrastructure_pid",
]
