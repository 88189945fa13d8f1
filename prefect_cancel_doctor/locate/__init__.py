"""Where a run lives: parse `infrastructure_pid`, dispatch to one module per kind.

Forms written by Prefect's workers (see DESIGN.md):

- process worker / runner: ``"3055"`` (older: ``"hostname:3055"``)
- Docker worker: ``"<docker base url>:<container id>"`` (split on the last ``:``)
- Kubernetes worker: ``"<namespace>:<job name>"`` (before 3.4.1 ``"<cluster uid>:<ns>:<job>"``)
- ECS worker: ``"<cluster>::<task arn>"``
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEX_ID = re.compile(r"^[0-9a-f]{12,64}$")


@dataclass(frozen=True)
class InfraRef:
    """A parsed `infrastructure_pid`."""

    kind: str  # "none" | "process" | "docker" | "kubernetes" | "ecs" | "unknown"
    raw: str | None
    pid: int | None = None
    host: str | None = None
    container_id: str | None = None
    docker_url: str | None = None
    namespace: str | None = None
    job: str | None = None


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
    #: "pid1", "engine", "runner" or "child".
    role: str
    #: PID inside the container's namespace, when it could be read (1 is the container's PID 1).
    ns_pid: int | None = None


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
    attach: str = "none"
    #: Its processes with their roles (see Location.pids for the host-mode PIDs to sample).
    processes: tuple[ContainerProcess, ...] = ()
    #: One-shot CPU and memory use, when running.
    stats: ContainerStats | None = None


@dataclass(frozen=True)
class Location:
    """The processes of one run found on this host, with their roles."""

    kind: str
    description: str
    #: (pid, role): "engine" (the flow process), "child" (processes it started),
    #: "hook" (the Runner's on_cancellation hook subprocess), "runner" (a local
    #: worker of the run's pool, sampled when nothing else is left), "pid1".
    pids: tuple[tuple[int, str], ...] = ()
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
    #: How the engine was found: "infrastructure_pid" or "PREFECT__FLOW_RUN_ID".
    found_by: str = "infrastructure_pid"


def parse_infrastructure_pid(raw: str | None) -> InfraRef:
    """Parse the forms above; anything else is kind "unknown"."""
    value = (raw or "").strip()
    if not value:
        return InfraRef("none", raw)
    if value.isdigit():
        return InfraRef("process", raw, pid=int(value))
    if "::" in value:
        cluster, _, task = value.partition("::")
        return InfraRef("ecs", raw, namespace=cluster, job=task)
    head, _, tail = value.rpartition(":")
    if "://" in head or (_HEX_ID.match(tail) and head):
        return InfraRef("docker", raw, container_id=tail, docker_url=head)
    if tail.isdigit() and head and "/" not in head and head.count(":") == 0:
        return InfraRef("process", raw, pid=int(tail), host=head)
    parts = value.split(":")
    if len(parts) in (2, 3) and all(parts):
        return InfraRef("kubernetes", raw, namespace=parts[-2], job=parts[-1])
    return InfraRef("unknown", raw)
