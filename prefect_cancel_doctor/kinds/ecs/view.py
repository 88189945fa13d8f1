"""`TaskView`: everything the scan read about one run's ECS task, the ground the ECS rules stand on.

The engine copies a `Location` into the report's `Target` field by field; the model has no field for
an ECS task, so the views of the tasks located in this process are kept here by the location's
description (unique to the task), for `gone`, `facts`, `stop_now` and `stopper` to read
(`remember`, `recall`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
#: Last statuses of a task whose containers no longer run.
GONE_STATUSES = frozenset({"STOPPED", "DEPROVISIONING", "DELETED"})


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
        return self.task is not None and (self.task.last_status or "") in GONE_STATUSES

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


_KEEP = 2000
_views: OrderedDict[str, TaskView] = OrderedDict()
_lock = threading.Lock()


def remember(description: str, view: TaskView) -> None:
    """Keep `view` for the location described so (the newest `_KEEP` locations)."""
    with _lock:
        _views[description] = view
        _views.move_to_end(description)
        while len(_views) > _KEEP:
            _views.popitem(last=False)


def recall(description: str) -> TaskView | None:
    with _lock:
        return _views.get(description)
