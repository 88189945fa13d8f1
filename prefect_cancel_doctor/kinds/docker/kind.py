"""The Docker kind: a run in a container of the Docker engine this host talks to, sampled by host
PID where this host sees its processes, else from a sidecar sharing its PID namespace."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect_cancel_doctor.core.progress import ProgressFn
from prefect_cancel_doctor.kinds.base import (
    KILL_WAIT_SECONDS,
    ContainerView,
    EngineProcess,
    Here,
    InfraRef,
    Job,
    Location,
    ProcessesOnly,
    Record,
    StopNow,
    Wait,
)
from prefect_cancel_doctor.kinds.docker.facts import container_facts, container_gone
from prefect_cancel_doctor.model import (
    AttachMode,
    Cause,
    ContainerProcess,
    InfraKind,
    Role,
    StateType,
    Target,
    Verdict,
)
from prefect_cancel_doctor.proc import procfs

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_records import FlowRun

_HEX_ID = re.compile(r"^[0-9a-f]{12,64}$")


class DockerKind(ProcessesOnly):
    """``"<docker base url>:<container id>"`` (split on the last ``:``)."""

    infra = InfraKind.DOCKER

    def parse(self, value: str) -> InfraRef | None:
        head, _, tail = value.rpartition(":")
        if "://" in head or (_HEX_ID.match(tail) and head):
            return InfraRef(InfraKind.DOCKER, value, container_id=tail, docker_url=head)
        return None

    def describe(self, ref: InfraRef, started: bool) -> str:
        return f"Docker container {(ref.container_id or '?')[:12]}"

    def may_still_run(self, run: FlowRun, here: Here) -> bool:
        return True

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        from prefect_cancel_doctor.clients.prefect_records import parse_time
        from prefect_cancel_doctor.kinds.docker.locate import locate_container

        # When the run entered Cancelling (its current state's time): the engine's events since then.
        cancelling = run.state is not None and run.state_type == StateType.CANCELLING
        since = parse_time(run.state.timestamp) if cancelling and run.state else None
        return locate_container(run.id, ref, proc_root=here.options.proc_root, since=since)

    def still_there(self, location: Location) -> bool:
        return bool(location.pids) or bool(location.container and location.container.running)

    def samples_apart(self, location: Location) -> bool:
        return location.container is not None and location.container.attach == AttachMode.SIDECAR

    def sample(self, jobs: list[Job], here: Here, progress: ProgressFn) -> None:
        """One sidecar a container, one container after another, through one engine connection."""
        from prefect_cancel_doctor.clients.docker_api import DockerClient, DockerError, resolve_endpoint
        from prefect_cancel_doctor.kinds.docker.sidecar import sample_container

        options = here.options
        with DockerClient(resolve_endpoint()) as client:
            for done, job in enumerate(jobs, 1):
                progress("sampling containers from a sidecar", done - 1, len(jobs))
                container = job.location.container
                assert container is not None
                try:
                    sampled = sample_container(
                        container.id,
                        client=client,
                        samples=options.samples,
                        interval=options.interval,
                        native=options.native,
                        locals=options.locals,
                        timeout=max(options.timeout, 30.0),
                    )
                except DockerError as exc:
                    job.notes.append(f"sidecar sampling of container {container.id[:12]} failed: {exc}")
                    continue
                job.samples.extend(sampled.processes)
                job.runner = sampled.runner
                job.notes.extend(sampled.notes)

    def gone(self, target: Target, notes: tuple[str, ...]) -> Verdict | None:
        return container_gone(target.container, notes) if target.container is not None else None

    def facts(self, target: Target, cause: Cause, runner_runs: bool) -> tuple[str, ...]:
        return container_facts(target.container) if target.container is not None else ()

    def in_container(self, target: Target) -> ContainerView | None:
        c = target.container
        if c is None:
            return None
        return ContainerView(
            f"container {c.id[:12]}", c.command, c.pid1_command, bool(c.init), "`docker stop`"
        )

    def stop_now(self, target: Target, cause: Cause) -> StopNow | None:
        container = target.container
        if container is None or not container.running:
            return None
        short = container.id[:12]
        # SIGKILL to the container (a shell as PID 1 would drop SIGTERM), then remove it.
        return StopNow(
            (f"docker kill {short}; docker rm -f {short} >/dev/null",),
            f"container {short} killed and removed",
        )

    def stopper(self, target: Target) -> ContainerStopper | None:
        container = target.container
        if container is None or not container.running:
            return None
        # Sampled from a sidecar, the samples hold namespace PIDs: the engine is signalled by its host PID.
        listing = container.processes if container.attach is not AttachMode.HOST else None
        return ContainerStopper(container.id, container.stop_timeout, listing)


@dataclass(frozen=True)
class ContainerStopper:
    """`resolve`'s steps for a running container: after its engine's SIGTERM (by host PID; a PID 1
    without a handler would drop `docker stop`'s), `docker stop` with the container's timeout, then
    `docker kill`."""

    container_id: str
    stop_timeout: int | None
    #: The engine's listing of the container's processes (host PIDs), where the samples do not hold them.
    listing: tuple[ContainerProcess, ...] | None = None

    @property
    def name(self) -> str:
        return self.container_id[:12]

    @property
    def what(self) -> str:
        return f"container {self.name}"

    def engines_by_host_pid(self) -> list[EngineProcess] | None:
        """The flow engine by its host PID, from the engine's listing (None: the samples' PIDs are the
        host's)."""
        if self.listing is None:
            return None
        found = []
        for process in self.listing:
            if process.role is Role.ENGINE:
                proc = procfs.read_process(process.pid, read_sockets=False)
                if proc is not None:
                    found.append(EngineProcess(process.pid, proc.start_time_ticks, process.args))
        return found

    def steps(self, grace: float, engine_pid: int | None) -> list[str]:
        short = self.container_id[:12]
        lines = []
        if engine_pid is not None:
            lines.append(f"SIGTERM the flow engine {engine_pid} (host PID) of container {short}")
        timeout = self.stop_timeout if self.stop_timeout is not None else 10
        lines.append(f"docker stop -t {timeout} {short} if it still runs after {grace:.0f} s")
        lines.append(f"docker kill {short} if it still runs then")
        return lines

    def stop(self, grace: float, wait: Wait, record: Record, engine_signalled: bool) -> bool:
        from prefect_cancel_doctor.clients.docker_api import DockerClient

        container_id, short = self.container_id, self.container_id[:12]
        with DockerClient() as client:

            def running() -> bool:
                return client.inspect(container_id).running

            if engine_signalled and running():
                wait(f"waiting for container {short} to stop", grace, lambda: not running())
            steps: tuple[tuple[str, Callable[[], None]], ...] = (
                ("docker stop", lambda: client.stop(container_id, self.stop_timeout)),
                ("docker kill", lambda: client.kill(container_id)),
            )
            for step, act in steps:
                if not running():
                    break
                act()
                record(step)
                wait(f"waiting for container {short} to stop", KILL_WAIT_SECONDS, lambda: not running())
            return running()
