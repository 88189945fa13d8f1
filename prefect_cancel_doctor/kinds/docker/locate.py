"""Docker containers: `locate_container` finds a run's container, its processes and how to sample them.

prefect-docker writes `infrastructure_pid` as ``"<docker base url>:<container id>"``.
The container carries the run's id twice: in its environment
(``PREFECT__FLOW_RUN_ID``) and as the label ``io.prefect.flow-run-id``. Nothing
is sampled before one of them matches the run.

Inside, the job's default command ``prefect flow-run execute`` is PID 1: that is
the Runner, and the flow engine (``python -m prefect.engine``) is its child. A
custom ``command`` may make the engine PID 1 (no Runner), or a shell PID 1 that
forwards no signal. `locate_container` maps those roles (`locate.roles`) onto
host PIDs when the container's processes are visible in our /proc and ptrace is
allowed ("host" attach mode); otherwise it lists them through the engine
(``docker top``) and leaves sampling to a sidecar sharing the container's PID
namespace (`prefect_cancel_doctor.kinds.docker.sidecar`). Given when the run entered
Cancelling, it also reads what the engine did to the container since (its event
log: `kill` with the signal, `stop`, `die` ...).

The engine is reached through `prefect_cancel_doctor.clients.docker_api`, which answers
with records: nothing here reads the engine's JSON.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

from prefect_cancel_doctor.clients.docker_api import (
    FLOW_RUN_LABEL,
    ContainerNotFound,
    DockerApiError,
    DockerClient,
    DockerConfigError,
    DockerError,
    recorded_remote_engine,
    resolve_endpoint,
)
from prefect_cancel_doctor.kinds import (
    CONTAINER_NOT_FOUND,
    ContainerInfo,
    ContainerProcess,
    InfraRef,
    Location,
)
from prefect_cancel_doctor.model import AttachMode, InfraKind, ProcSnapshot, Role
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.proc.roles import assign_roles

ATTACH_ENV = "PCD_DOCKER_ATTACH"
#: The request that lets the facts choose the attach mode.
ATTACH_AUTO = "auto"
#: What PCD_DOCKER_ATTACH (or `attach=`) may ask for.
ATTACH_REQUESTS = (ATTACH_AUTO, AttachMode.HOST.value, AttachMode.SIDECAR.value)

_CAP_SYS_PTRACE = 19


def _split_args(args: str) -> tuple[str, ...]:
    # `docker top` joins arguments with spaces; splitting again is exact for the
    # commands Prefect runs (no spaces inside an argument) and good enough for roles.
    return tuple(args.split())


# -- attach mode -----------------------------------------------------------------------


def choose_attach_mode(requested: str | None, *, host_pid_visible: bool, can_ptrace: bool) -> AttachMode:
    """HOST when the container's processes are in our /proc and ptrace is allowed, else SIDECAR.

    `requested` ("host", "sidecar", "auto"/None) comes from PCD_DOCKER_ATTACH or
    a flag and wins over the facts.
    """
    mode = (requested or ATTACH_AUTO).strip().lower()
    if mode not in ATTACH_REQUESTS:
        raise DockerConfigError(
            f"unknown Docker attach mode {requested!r}",
            hint=f"set {ATTACH_ENV} to one of: {', '.join(ATTACH_REQUESTS)}",
        )
    if mode != ATTACH_AUTO:
        return AttachMode(mode)
    return AttachMode.HOST if host_pid_visible and can_ptrace else AttachMode.SIDECAR


def can_ptrace_here(proc_root: str = "/proc") -> bool:
    """Whether this process holds CAP_SYS_PTRACE (root, or a container with --cap-add SYS_PTRACE)."""
    status = Path(proc_root, "self", "status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    except (OSError, ValueError):
        pass
    return False


def host_view(host_pid: int | None, run_id: str, proc_root: str = "/proc") -> ProcSnapshot | None:
    """The container's PID 1 in our /proc, if it is really there: same run id, PID 1 of a namespace.

    Returns None when the engine runs in another PID namespace (remote engine,
    Docker Desktop, rootless) so the host PID means nothing here.
    """
    if not host_pid:
        return None
    snapshot = procfs.read_process(host_pid, proc_root)
    if snapshot is None or snapshot.ns_pid != 1 or snapshot.flow_run_id != run_id:
        return None
    return snapshot


# -- locate ------------------------------------------------------------------------


def locate_container(
    run_id: str,
    ref: InfraRef,
    *,
    client: DockerClient | None = None,
    proc_root: str = "/proc",
    attach: str | None = None,
    with_stats: bool = True,
    environ: Mapping[str, str] | None = None,
    since: datetime | None = None,
) -> Location:
    """Find a run's container and its processes' roles; never samples anything.

    The container must carry the run's id (environment or label) before any of
    its processes is listed. An exited, restarting, paused or removed container
    comes back with `container` set and no PIDs, for the rules to read; an
    engine that cannot be reached gives `unreachable` with what to do.
    `attach` overrides PCD_DOCKER_ATTACH (host, sidecar or auto).

    With `since` (when the run entered Cancelling), `container.events` holds what the
    engine did to the run's container from then on; left None, with a note, when the
    events cannot be read, and for a container that is gone or not the run's.
    """
    env = os.environ if environ is None else environ
    short = (ref.container_id or "?")[:12]
    own_client = client is None
    try:
        if client is None:
            endpoint = resolve_endpoint(environ=env)
            elsewhere = recorded_remote_engine(ref.docker_url, endpoint)
            if elsewhere is not None:
                return Location(
                    InfraKind.DOCKER,
                    f"Docker container {short} on another engine",
                    unreachable=(
                        f"the run's container was started through the Docker engine at {elsewhere} "
                        f"(its infrastructure_pid); this doctor talks only to the engine it is "
                        f"configured for ({endpoint.url}): run it on that host, or set DOCKER_HOST"
                    ),
                    container_id=ref.container_id,
                )
            client = DockerClient(endpoint)
        try:
            location = _locate(run_id, ref, client, proc_root, attach or env.get(ATTACH_ENV), with_stats)
            return location if since is None else _with_events(location, client, since)
        finally:
            if own_client:
                client.close()
    except DockerError as exc:
        why = str(exc) + (f"; {exc.hint}" if exc.hint else "")
        return Location(
            InfraKind.DOCKER, f"Docker container {short}", unreachable=why, container_id=ref.container_id
        )


def _locate(
    run_id: str,
    ref: InfraRef,
    client: DockerClient,
    proc_root: str,
    attach: str | None,
    with_stats: bool,
) -> Location:
    notes: list[str] = []
    container_id = ref.container_id or ""
    found: ContainerInfo | None = None
    if container_id:
        try:
            found = client.inspect(container_id)
        except ContainerNotFound:
            notes.append(f"container {container_id[:12]} no longer exists on the Docker engine (removed)")
        if found is not None and found.flow_run_id != run_id:
            other = found.flow_run_id
            notes.append(
                f"container {container_id[:12]} belongs to "
                + (f"flow run {other}" if other else "no flow run (no PREFECT__FLOW_RUN_ID, no label)")
                + "; not sampled"
            )
            found = None
    if found is None:
        # infrastructure_pid may be missing or stale: look for the run's own container.
        candidates = [c for c in client.containers_for_run(run_id) if c != container_id]
        if candidates:
            found = client.inspect(candidates[0])
            notes.append(f"found container {candidates[0][:12]} by its {FLOW_RUN_LABEL} label / environment")
    if found is None:
        gone = ContainerInfo(id=container_id, name=None, status=CONTAINER_NOT_FOUND, running=False)
        return Location(
            InfraKind.DOCKER,
            f"Docker container {container_id[:12] or '?'} (gone)",
            notes=tuple(notes),
            container_id=container_id or None,
            container=gone,
        )
    info = found
    description = f"Docker container {info.name or info.id[:12]} ({info.id[:12]})"
    if info.status != "running":
        notes.append(_not_running_note(info))
        return Location(
            InfraKind.DOCKER, description, notes=tuple(notes), container_id=info.id, container=info
        )

    visible = host_view(info.host_pid, run_id, proc_root)
    mode = choose_attach_mode(
        attach, host_pid_visible=visible is not None, can_ptrace=can_ptrace_here(proc_root)
    )
    if mode is AttachMode.HOST and visible is None:
        notes.append(
            f"{ATTACH_ENV}=host, but the container's PID 1 (host PID {info.host_pid}) is not this run's "
            "process in our /proc: the engine runs in another PID namespace; nothing sampled"
        )
        return Location(
            InfraKind.DOCKER, description, notes=tuple(notes), container_id=info.id, container=info
        )

    pids: list[tuple[int, Role]] = []
    runner_pid: int | None = None
    processes: tuple[ContainerProcess, ...] = ()
    if mode is AttachMode.HOST and visible is not None:
        snapshots = _tree(visible, proc_root)
        pids, runner_pid = assign_roles(((s.pid, s.ppid, s.cmdline) for s in snapshots), visible.pid)
        role_of = dict(pids)
        if runner_pid is not None:
            role_of[runner_pid] = Role.RUNNER
        processes = tuple(
            ContainerProcess(
                s.pid, s.ppid, " ".join(s.cmdline) or s.comm, role_of.get(s.pid, Role.CHILD), s.ns_pid
            )
            for s in snapshots
            if s.pid in role_of
        )
        pid1_command = visible.cmdline
    else:
        try:
            rows = client.top(info.id)
        except DockerApiError as exc:
            rows = []
            notes.append(f"could not list the container's processes (docker top): {exc}")
        roles, runner = assign_roles(
            ((r.pid, r.ppid, _split_args(r.args)) for r in rows), info.host_pid or -1
        )
        role_of = dict(roles)
        if runner is not None:
            role_of[runner] = Role.RUNNER
        # In tree order (PID 1 first), as in host mode: `docker top` sorts by PID, which wraps around.
        tree_order = {pid: index for index, pid in enumerate([info.host_pid, *(pid for pid, _ in roles)])}
        processes = tuple(
            ContainerProcess(r.pid, r.ppid, r.args, role_of[r.pid], 1 if r.pid == info.host_pid else None)
            for r in sorted(rows, key=lambda r: tree_order.get(r.pid, len(tree_order)))
            if r.pid in role_of
        )
        pid1_command = next((_split_args(r.args) for r in rows if r.pid == info.host_pid), ())
        notes.append(
            "the container's processes are not reachable from here (other PID namespace or no ptrace): "
            "they are sampled from a sidecar container sharing its PID namespace"
        )
    if not any(role is Role.ENGINE for _, role in pids) and not any(p.role is Role.ENGINE for p in processes):
        notes.append("no flow engine process (python -m prefect.engine) runs in the container")
    stats = None
    if with_stats:
        try:
            stats = client.stats(info.id)
        except DockerError as exc:
            notes.append(f"container stats unavailable: {exc}")
    info = dataclasses.replace(info, pid1_command=pid1_command, attach=mode, processes=processes, stats=stats)
    return Location(
        InfraKind.DOCKER,
        description,
        tuple(pids),
        runner_pid,
        None,
        tuple(notes),
        container_id=info.id,
        container=info,
    )


def _with_events(location: Location, client: DockerClient, since: datetime) -> Location:
    """`location` with its container's engine events since `since` (a note when unreadable)."""
    info = location.container
    if info is None or info.status == CONTAINER_NOT_FOUND or not info.id:
        return location
    try:
        events = client.events(info.id, since)
    except DockerError as exc:
        why = str(exc) + (f"; {exc.hint}" if exc.hint else "")
        note = f"the Docker engine's events for container {info.id[:12]} could not be read: {why}"
        return dataclasses.replace(location, notes=(*location.notes, note))
    return dataclasses.replace(location, container=dataclasses.replace(info, events=events))


def _tree(root: ProcSnapshot, proc_root: str) -> list[ProcSnapshot]:
    """PID 1 and every live descendant, breadth first."""
    found = [root]
    queue = list(root.children)
    seen = {root.pid}
    while queue:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        snapshot = procfs.read_process(pid, proc_root)
        if snapshot is None or snapshot.state == "Z":
            continue
        found.append(snapshot)
        queue.extend(snapshot.children)
    return found


def _not_running_note(info: ContainerInfo) -> str:
    short = info.id[:12]
    if info.status == "paused":
        return f"container {short} is paused (its cgroup is frozen): not sampled, ptrace would hang"
    if info.status == "restarting":
        return f"container {short} is restarting (restart count {info.restart_count})"
    facts = [f"container {short} is {info.status}"]
    if info.exit_code is not None and info.status != "created":
        facts.append(f"exit code {info.exit_code}")
    if info.oom_killed:
        facts.append("OOM-killed")
    if info.finished_at:
        facts.append(f"finished at {info.finished_at}")
    return ", ".join(facts)


def iter_run_containers(client: DockerClient, run_ids: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(run id, container id) for every labelled container of the given runs (one API call)."""
    wanted = set(run_ids)
    for summary in client.containers(filters={"label": [FLOW_RUN_LABEL]}):
        run_id = summary.labels.get(FLOW_RUN_LABEL)
        if run_id is not None and run_id in wanted:
            yield run_id, summary.id


__all__ = [
    "ATTACH_AUTO",
    "ATTACH_ENV",
    "ATTACH_REQUESTS",
    "can_ptrace_here",
    "choose_attach_mode",
    "host_view",
    "iter_run_containers",
    "locate_container",
]
