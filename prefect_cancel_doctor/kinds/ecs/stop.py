"""`resolve`'s stopper for an ECS task."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_cancel_doctor.kinds.base import KILL_WAIT_SECONDS, EngineProcess, Record, Wait
from prefect_cancel_doctor.kinds.ecs.locate import API_TIMEOUT
from prefect_cancel_doctor.model import ContainerInfo, ContainerProcess, TaskFacts


@dataclass(frozen=True)
class TaskStopper:
    """`resolve`'s steps for a running ECS task: after its engine's SIGTERM (by host PID, where this
    host runs it), StopTask (ECS sends SIGTERM, then SIGKILL after the container's stopTimeout), then,
    on this host, `docker kill` of its container if it still runs."""

    task: TaskFacts
    container: ContainerInfo | None = None
    #: The Docker engine's listing of the container's processes (host PIDs), where the samples lack them.
    listing: tuple[ContainerProcess, ...] | None = None

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def what(self) -> str:
        return f"ECS task {self.task.name}"

    def engines_by_host_pid(self) -> list[EngineProcess] | None:
        if self.listing is None:
            return None
        from prefect_cancel_doctor.kinds.docker.kind import ContainerStopper

        assert self.container is not None
        return ContainerStopper(self.container.id, None, self.listing).engines_by_host_pid()

    def steps(self, grace: float, engine_pid: int | None) -> list[str]:
        from prefect_cancel_doctor.kinds.ecs.facts import stop_commands

        lines = []
        if engine_pid is not None:
            lines.append(f"SIGTERM the flow engine {engine_pid} (host PID) of ECS task {self.task.name}")
        lines.append(
            f"`{stop_commands(self.task)[0]}` if it still runs after {grace:.0f} s "
            f"(ECS: SIGTERM, then SIGKILL after {self.task.stop_timeout} s)"
        )
        if self.container is not None:
            lines.append(f"docker kill {self.container.id[:12]} if it still runs then")
        return lines

    def stop(self, grace: float, wait: Wait, record: Record, engine_signalled: bool) -> bool:
        from prefect_cancel_doctor.clients.ecs_api import EcsApi, EcsError
        from prefect_cancel_doctor.kinds.ecs.facts import STOP_REASON
        from prefect_cancel_doctor.kinds.ecs.read import read_tasks

        task, ecs = self.task, EcsApi(timeout=API_TIMEOUT)
        key = (task.cluster, task.task_arn)

        def running() -> bool:
            if self.container is not None:
                from prefect_cancel_doctor.clients.docker_api import ContainerNotFound, DockerClient

                with DockerClient() as client:
                    try:
                        return client.inspect(self.container.id).running
                    except ContainerNotFound:
                        return False
            return read_tasks([key], ecs, local=False)[key].running

        if engine_signalled and running():
            wait(f"waiting for ECS task {task.name} to stop", grace, lambda: not running())
        if running():
            try:
                ecs.stop_task(task.cluster, task.task_arn, STOP_REASON)
            except EcsError as exc:
                record(f"aws ecs stop-task failed: {exc}")
            else:
                record("aws ecs stop-task")
            wait(
                f"waiting for ECS task {task.name} to stop",
                task.stop_timeout + KILL_WAIT_SECONDS,
                lambda: not running(),
            )
        if self.container is not None and running():
            from prefect_cancel_doctor.clients.docker_api import DockerClient

            with DockerClient() as client:
                client.kill(self.container.id)
            record("docker kill")
            wait(f"waiting for ECS task {task.name} to stop", KILL_WAIT_SECONDS, lambda: not running())
        return running()
