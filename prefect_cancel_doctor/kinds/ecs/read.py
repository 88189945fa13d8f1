"""Reading a scan's ECS tasks together: one `DescribeTasks` per cluster per 100 tasks, one
`DescribeTaskDefinition` per task definition and one `DescribeContainerInstances` per cluster, for
the running tasks only; and one listing of this host's Docker engine for the ECS agent's labels.

Nothing here raises for a run: what cannot be read is the run's `TaskView.error` or a note.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable

from prefect_cancel_doctor.clients.ecs_api import EcsApi, EcsError, region_of_arn
from prefect_cancel_doctor.kinds.ecs.view import TaskView

#: The labels the ECS agent gives the Docker containers of a task on an EC2 container instance.
TASK_ARN_LABEL = "com.amazonaws.ecs.task-arn"
CONTAINER_NAME_LABEL = "com.amazonaws.ecs.container-name"
CLUSTER_LABEL = "com.amazonaws.ecs.cluster"


def split_identifier(value: str) -> tuple[str, str] | None:
    """ "<cluster>::<task ARN>" (prefect-aws's `parse_identifier`) as (cluster, task), else None."""
    if "::" not in value:
        return None
    cluster, _, task = value.partition("::")
    return (cluster, task) if cluster and task else None


def _why(exc: EcsError) -> str:
    return str(exc) + (f"; {exc.hint}" if exc.hint else "")


def read_tasks(
    identifiers: Iterable[tuple[str, str]], api: EcsApi, *, local: bool = True
) -> dict[tuple[str, str], TaskView]:
    """A `TaskView` for each (cluster, task ARN), read together."""
    wanted = list(dict.fromkeys(identifiers))
    groups: dict[tuple[str | None, str], list[str]] = defaultdict(list)
    for cluster, arn in wanted:
        groups[(region_of_arn(arn) or region_of_arn(cluster), cluster)].append(arn)
    views: dict[tuple[str, str], TaskView] = {}
    for (region, cluster), arns in groups.items():
        try:
            found, missing = api.describe_tasks(cluster, arns, region)
        except EcsError as exc:
            for arn in arns:
                views[(cluster, arn)] = TaskView(cluster, arn, error=_why(exc))
            continue
        for arn in arns:
            task = found.get(arn)
            if task is None:
                views[(cluster, arn)] = TaskView(cluster, arn, missing=missing.get(arn))
            else:
                views[(cluster, arn)] = TaskView(cluster, task.arn, task)
    running = [v for v in views.values() if v.running]
    _with_definitions(views, running, api)
    _with_instances(views, api)
    if local and any(v.running for v in views.values()):
        _with_local_containers(views)
    return views


def _with_definitions(views: dict[tuple[str, str], TaskView], running: list[TaskView], api: EcsApi) -> None:
    arns = {v.task.task_definition_arn for v in running if v.task and v.task.task_definition_arn}
    definitions = {}
    problems: dict[str, str] = {}
    for arn in sorted(arns):
        try:
            definitions[arn] = api.describe_task_definition(arn)
        except EcsError as exc:
            problems[arn] = f"the task definition {arn} could not be read: {_why(exc)}"
    for key, view in views.items():
        definition_arn = view.task.task_definition_arn if view.task else None
        if definition_arn is None:
            continue
        if definition_arn in definitions:
            views[key] = dataclasses.replace(view, definition=definitions[definition_arn])
        elif definition_arn in problems:
            views[key] = dataclasses.replace(view, notes=(*view.notes, problems[definition_arn]))


def _with_instances(views: dict[tuple[str, str], TaskView], api: EcsApi) -> None:
    by_cluster: dict[str, list[str]] = defaultdict(list)
    for view in views.values():
        if view.running and view.task and view.task.container_instance_arn and not view.task.on_fargate:
            by_cluster[view.cluster].append(view.task.container_instance_arn)
    for cluster, arns in by_cluster.items():
        try:
            instances = api.describe_container_instances(cluster, arns, region_of_arn(arns[0]))
        except EcsError as exc:
            note = f"the container instances of cluster {cluster} could not be read: {_why(exc)}"
            for key, view in views.items():
                if view.cluster == cluster and view.running:
                    views[key] = dataclasses.replace(view, notes=(*view.notes, note))
            continue
        for key, view in views.items():
            arn = view.task.container_instance_arn if view.task else None
            if view.cluster == cluster and arn in instances:
                views[key] = dataclasses.replace(view, instance=instances[arn])


def local_task_containers() -> dict[str, list[tuple[str, str]]]:
    """Task ARN → [(Docker id, ECS container name)] of this host's Docker engine (empty without one)."""
    from prefect_cancel_doctor.clients.docker_api import DockerClient, DockerError, resolve_endpoint

    try:
        with DockerClient(resolve_endpoint()) as client:
            listed = client.containers(all=False, filters={"label": [TASK_ARN_LABEL]})
    except DockerError:
        return {}
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for summary in listed:
        arn = summary.labels.get(TASK_ARN_LABEL)
        if arn:
            found[arn].append((summary.id, summary.labels.get(CONTAINER_NAME_LABEL, "")))
    return found


def _with_local_containers(views: dict[tuple[str, str], TaskView]) -> None:
    local = local_task_containers()
    for key, view in views.items():
        containers = local.get(view.task_arn) if view.running else None
        if not containers:
            continue
        wanted = view.container_name
        chosen = next((cid for cid, name in containers if name == wanted), containers[0][0])
        views[key] = dataclasses.replace(view, local_container=chosen)
