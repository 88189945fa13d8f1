"""Locating a run's ECS task from what the scan read (`read`): on this host's Docker engine, stopped,
or running where the doctor cannot sample it; and `inspect --ecs-task`'s reading of one task."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from prefect_cancel_doctor.kinds.base import InfraRef, Location
from prefect_cancel_doctor.model import InfraKind

if TYPE_CHECKING:
    from prefect_cancel_doctor.core.options import Options
    from prefect_cancel_doctor.kinds.ecs.view import TaskView
    from prefect_cancel_doctor.model import TaskFacts

#: Seconds an ECS API call may take.
API_TIMEOUT = 10.0


def locate_task(
    run_id: str | None,
    view: TaskView,
    options: Options,
    *,
    since: object = None,
    final_state: str | None = None,
) -> Location:
    """Where the run's task is, from what ECS and this host's Docker engine say; never samples."""
    from prefect_cancel_doctor.kinds.ecs.facts import next_step, stop_commands

    task = view.facts()
    description = f"ECS task {task.name}"
    if task.error is not None:
        return Location(
            InfraKind.ECS,
            description,
            unreachable=f"the run is ECS task {task.name}, but the ECS API could not be read: {task.error}",
            task=task,
        )
    if task.flow_run_id and run_id and task.flow_run_id != run_id:
        return Location(
            InfraKind.ECS,
            description,
            unreachable=(
                f"ECS task {task.name} belongs to flow run {task.flow_run_id}, not to this run "
                "(its PREFECT__FLOW_RUN_ID / prefect.io/flow-run-id tag): not read"
            ),
            task=task,
        )
    if task.local_container is not None:
        return _on_this_host(run_id or task.flow_run_id, task, view.notes, options, since)
    if task.gone:
        return Location(InfraKind.ECS, description + " (stopped)", notes=view.notes, task=task)
    why = next_step(task)
    if final_state is not None:  # the server's cancellation timeout, say: the task holds on
        why = (
            f"the run is {final_state} but its ECS task {task.name} still runs (an orphan, holding its "
            f"capacity): stop it with `{stop_commands(task)[0]}`; {why}"
        )
    return Location(InfraKind.ECS, description, notes=view.notes, unreachable=why, task=task)


def _on_this_host(
    run_id: str | None, task: TaskFacts, notes: tuple[str, ...], options: Options, since: object
) -> Location:
    from datetime import datetime

    from prefect_cancel_doctor.clients.docker_api import DockerClient, resolve_endpoint
    from prefect_cancel_doctor.kinds.docker.locate import locate_container

    container_id = task.local_container or ""
    ref = InfraRef(InfraKind.DOCKER, container_id, container_id=container_id)
    with DockerClient(resolve_endpoint()) as client:
        found = locate_container(
            run_id or "",
            ref,
            client=client,
            proc_root=options.proc_root,
            since=since if isinstance(since, datetime) else None,
        )
    note = (
        f"ECS task {task.name} runs on this host: its container {task.container_name} is Docker container "
        f"{container_id[:12]}, found by the ECS agent's labels"
    )
    return dataclasses.replace(
        found,
        kind=InfraKind.ECS,
        description=f"ECS task {task.name} on this host (Docker container {container_id[:12]})",
        notes=(note, *notes, *found.notes),
        task=task,
    )


def locate_alone(target: str, options: Options) -> tuple[str | None, Location]:
    """`inspect --ecs-task CLUSTER/TASK` (or a task ARN): the task's run id, and where it is."""
    from prefect_cancel_doctor.clients.ecs_api import EcsApi
    from prefect_cancel_doctor.errors import TargetError
    from prefect_cancel_doctor.kinds.ecs.read import read_tasks

    cluster, task = split_target(target)
    view = read_tasks([(cluster, task)], EcsApi(timeout=API_TIMEOUT))[(cluster, task)]
    if view.missing is not None:
        raise TargetError(
            f"no ECS task {task} in cluster {cluster} ({view.missing})",
            hint=f"list them with `aws ecs list-tasks --cluster {cluster}`",
        )
    run_id = view.task.flow_run_id if view.task else None
    if view.gone:
        from prefect_cancel_doctor.kinds.ecs.facts import stop_story

        raise TargetError(
            f"ECS task {view.name} {stop_story(view.facts())}: nothing of it runs to inspect",
            hint=f"diagnose its run: `prefect-cancel-doctor diagnose {run_id}`" if run_id else None,
        )
    return run_id, locate_task(run_id, view, options)


def split_target(target: str) -> tuple[str, str]:
    """ "CLUSTER/TASK", a task ARN (``…:task/CLUSTER/ID``), or "CLUSTER::TASK ARN"."""
    from prefect_cancel_doctor.errors import ConfigurationError

    if "::" in target:
        cluster, _, task = target.partition("::")
    elif target.startswith("arn:") and ":task/" in target:
        parts = target.split(":task/", 1)[1].split("/")
        if len(parts) != 2:
            raise ConfigurationError(
                f"task ARN {target!r} names no cluster", hint="give it as CLUSTER/TASK (or CLUSTER::TASK ARN)"
            )
        cluster, task = parts[0], target
    else:
        cluster, _, task = target.rpartition("/")
    if not cluster or not task:
        raise ConfigurationError(
            f"not an ECS task: {target!r}", hint="give it as CLUSTER/TASK (a task id or ARN)"
        )
    return cluster, task
