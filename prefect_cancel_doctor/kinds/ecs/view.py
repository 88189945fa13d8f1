"""`TaskView`: what a scan read about one run's ECS task (ECS's records, this host's container), and
`TaskView.facts`, the report model's `TaskFacts` the rules, `resolve` and the JSON read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect_cancel_doctor.model import TASK_GONE_STATUSES, TaskContainerFact, TaskFacts

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.ecs_api.records import (
        ContainerDefinition,
        ContainerInstance,
        EcsContainer,
        EcsTask,
        TaskDefinition,
    )

#: ECS's default stopTimeout (seconds between StopTask's SIGTERM and its SIGKILL).
DEFAULT_STOP_TIMEOUT = 30
#: prefect-aws's default container name.
PREFECT_CONTAINER = "prefect"


@dataclass(frozen=True)
class TaskView:
    """One run's ECS task: its identifier, what ECS says of it, and what this host has of it."""

    #: As in `infrastructure_pid`: a name or an ARN.
    cluster: str
    task_arn: str
    task: EcsTask | None = None
    definition: TaskDefinition | None = None
    instance: ContainerInstance | None = None
    #: ECS does not know the task (DescribeTasks' failure reason, "MISSING").
    missing: str | None = None
    #: Why ECS could not be read, and what to do (no credentials, access denied, ...).
    error: str | None = None
    #: The Docker id of the task's flow container on this host's engine (an EC2 container instance).
    local_container: str | None = None
    #: What could not be read beside the task (its definition, its container instance).
    notes: tuple[str, ...] = ()

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]

    @property
    def cluster_name(self) -> str:
        if self.task is not None and self.task.cluster_name:
            return self.task.cluster_name
        return self.cluster.rsplit("/", 1)[-1]

    @property
    def name(self) -> str:
        """ "prod/0123abcd…" """
        return f"{self.cluster_name}/{self.task_id}"

    @property
    def gone(self) -> bool:
        """ECS no longer runs it: stopped, or no longer known."""
        if self.missing is not None:
            return True
        return self.task is not None and (self.task.last_status or "") in TASK_GONE_STATUSES

    @property
    def running(self) -> bool:
        return self.task is not None and not self.gone

    @property
    def flow_container(self) -> EcsContainer | None:
        """The container that runs the flow: prefect-aws's "prefect", else the one the run's command
        overrides, else the first."""
        task = self.task
        if task is None or not task.containers:
            return None
        by_name = {c.name: c for c in task.containers}
        for name in (PREFECT_CONTAINER, *task.override_commands):
            if name in by_name:
                return by_name[name]
        return task.containers[0]

    @property
    def flow_definition(self) -> ContainerDefinition | None:
        container = self.flow_container
        if self.definition is None:
            return None
        if container is None:
            return self.definition.container(PREFECT_CONTAINER)
        return self.definition.container(container.name)

    @property
    def container_name(self) -> str:
        container = self.flow_container
        return container.name if container is not None else PREFECT_CONTAINER

    @property
    def stop_timeout(self) -> int:
        definition = self.flow_definition
        if definition is not None and definition.stop_timeout is not None:
            return definition.stop_timeout
        return DEFAULT_STOP_TIMEOUT

    @property
    def command(self) -> tuple[str, ...]:
        """The flow container's command: the run's override (prefect-aws sets it), else the definition's."""
        container = self.flow_container
        if self.task is not None and container is not None and container.name in self.task.override_commands:
            return self.task.override_commands[container.name]
        definition = self.flow_definition
        return definition.command if definition is not None else ()

    def facts(self) -> TaskFacts:
        """The task as the report model holds it."""
        task, definition, instance = self.task, self.flow_definition, self.instance
        facts = TaskFacts(
            self.cluster,
            self.task_arn,
            self.cluster_name,
            error=self.error,
            missing=self.missing,
            container_name=self.container_name,
            command=self.command,
            stop_timeout=self.stop_timeout,
            init_process_enabled=definition.init_process_enabled if definition is not None else None,
            sys_ptrace=("SYS_PTRACE" in definition.capabilities_add) if definition is not None else None,
            ec2_instance_id=instance.ec2_instance_id if instance is not None else None,
            agent_connected=instance.agent_connected if instance is not None else None,
            local_container=self.local_container,
        )
        if task is None:
            return facts
        return dataclasses.replace(
            facts,
            last_status=task.last_status,
            desired_status=task.desired_status,
            stop_code=task.stop_code,
            stopped_reason=task.stopped_reason,
            started_at=task.started_at,
            stopping_at=task.stopping_at,
            stopped_at=task.stopped_at,
            launch_type="FARGATE" if task.on_fargate else (task.launch_type or task.capacity_provider),
            on_fargate=task.on_fargate,
            enable_execute_command=task.enable_execute_command,
            containers=tuple(
                TaskContainerFact(c.name, c.last_status, c.exit_code, c.reason) for c in task.containers
            ),
            flow_run_id=task.flow_run_id,
        )
