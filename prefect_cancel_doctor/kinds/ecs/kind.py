"""The ECS kind: a run in a task of prefect-aws's ECS worker, read through the ECS API; sampled
through this host's Docker engine when this host is the task's EC2 container instance (the ECS
agent's labels name the task's containers), else `not_attachable` with where and how it can be."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect_cancel_doctor.kinds.base import (
    ContainerView,
    Here,
    InfraRef,
    Job,
    Location,
    ProcessesOnly,
    StopNow,
)
from prefect_cancel_doctor.model import (
    AttachMode,
    Cause,
    InfraKind,
    StateType,
    Target,
    TimelineEntry,
    Verdict,
)

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.ecs_api import EcsApi
    from prefect_cancel_doctor.clients.prefect_records import FlowRun
    from prefect_cancel_doctor.core.progress import ProgressFn
    from prefect_cancel_doctor.kinds.ecs.stop import TaskStopper
    from prefect_cancel_doctor.kinds.ecs.view import TaskView


class EcsKind(ProcessesOnly):
    """``"<cluster>::<task ARN>"`` (prefect-aws's ECS worker, `parse_identifier`)."""

    infra = InfraKind.ECS

    def parse(self, value: str) -> InfraRef | None:
        from prefect_cancel_doctor.kinds.ecs.read import split_identifier

        parts = split_identifier(value)
        if parts is None:
            return None
        return InfraRef(InfraKind.ECS, value, namespace=parts[0], job=parts[1])

    def describe(self, ref: InfraRef, started: bool) -> str:
        return f"ECS task {(ref.namespace or '?').rsplit('/', 1)[-1]}/{(ref.job or '?').rsplit('/', 1)[-1]}"

    def prepare(self, runs: list[FlowRun], here: Here) -> set[str]:
        """Every run's task read together (one DescribeTasks per cluster per 100 tasks)."""
        from prefect_cancel_doctor.kinds.ecs.read import read_tasks, split_identifier

        identifiers = [p for p in (split_identifier(r.infrastructure_pid or "") for r in runs) if p]
        views = read_tasks(identifiers, api(here))
        views_of(here).update(views)
        return set()

    def may_still_run(self, run: FlowRun, here: Here) -> bool:
        return True

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        from prefect_cancel_doctor.clients.prefect_records import parse_time
        from prefect_cancel_doctor.kinds.ecs.locate import locate_task
        from prefect_cancel_doctor.kinds.ecs.read import read_tasks

        key = (ref.namespace or "", ref.job or "")
        views = views_of(here)
        view = views.get(key)
        if view is None:  # not prepared (a caller outside the scan): read it alone
            view = read_tasks([key], api(here))[key]
        cancelling = run.state is not None and run.state_type == StateType.CANCELLING
        since = parse_time(run.state.timestamp) if cancelling and run.state else None
        final = None if cancelling or run.state is None else run.state.name
        return locate_task(run.id, view, here.options, since=since, final_state=final)

    def still_there(self, location: Location) -> bool:
        if location.pids or (location.container is not None and location.container.running):
            return True
        return location.task is not None and location.task.running

    def samples_apart(self, location: Location) -> bool:
        return location.container is not None and location.container.attach == AttachMode.SIDECAR

    def sample(self, jobs: list[Job], here: Here, progress: ProgressFn) -> None:
        """A task's containers on this host are Docker containers: sampled as the Docker kind does."""
        from prefect_cancel_doctor.kinds.docker.kind import DockerKind

        DockerKind().sample(jobs, here, progress)

    def gone(self, target: Target, notes: tuple[str, ...]) -> Verdict | None:
        from prefect_cancel_doctor.kinds.docker.facts import container_gone
        from prefect_cancel_doctor.kinds.ecs.facts import task_gone

        if target.task is not None and target.task.gone:
            return task_gone(target.task, notes)
        if target.container is not None:  # ECS has not seen it yet: this host's engine has
            return container_gone(target.container, notes)
        return None

    def facts(self, target: Target, cause: Cause, runner_runs: bool) -> tuple[str, ...]:
        from prefect_cancel_doctor.kinds.docker.facts import container_facts
        from prefect_cancel_doctor.kinds.ecs.facts import task_facts

        task = target.task
        if task is None:
            return ()
        facts = task_facts(task)
        if task.local_container and target.container is not None:  # the location's note says how found
            facts += container_facts(target.container)
        return facts

    def in_container(self, target: Target) -> ContainerView | None:
        task, c = target.task, target.container
        if task is None:
            return None
        name = f"container {task.container_name} of ECS task {task.name}"
        stopped_by = "ECS's StopTask (its agent's `docker stop`)"
        if c is not None:
            return ContainerView(name, c.command or task.command, c.pid1_command, bool(c.init), stopped_by)
        return ContainerView(name, task.command, (), bool(task.init_process_enabled), stopped_by)

    def short_fix(self, target: Target, cause: Cause) -> str | None:
        from prefect_cancel_doctor.kinds.ecs.facts import short_fix_for

        return short_fix_for(target.task, cause)

    def fixes(self, target: Target, cause: Cause) -> tuple[str, ...] | None:
        from prefect_cancel_doctor.kinds.ecs.facts import fixes_for

        return fixes_for(target.task, cause)

    def timeline(self, target: Target) -> tuple[TimelineEntry, ...]:
        from prefect_cancel_doctor.kinds.ecs.facts import task_timeline

        return task_timeline(target.task) if target.task is not None else ()

    def stop_now(self, target: Target, cause: Cause) -> StopNow | None:
        from prefect_cancel_doctor.kinds.ecs.facts import stop_commands

        task = target.task
        if task is None or not task.running:
            return None
        return StopNow(stop_commands(task), f"ECS task {task.name} stopped")

    def stopper(self, target: Target) -> TaskStopper | None:
        from prefect_cancel_doctor.kinds.ecs.stop import TaskStopper

        task = target.task
        if task is None or not task.running:
            return None
        container = target.container
        listing = (
            container.processes if container is not None and container.attach is not AttachMode.HOST else None
        )
        return TaskStopper(task, container, listing)


def views_of(here: Here) -> dict[tuple[str, str], TaskView]:
    """The scan's tasks by (cluster, task ARN) as `prepare` read them."""
    made: dict[tuple[str, str], TaskView] = {}
    return here.shared("ecs.views", lambda: made)


def api(here: Here) -> EcsApi:
    """The scan's ECS client (boto3 is imported when it makes its first call)."""
    from prefect_cancel_doctor.clients.ecs_api import EcsApi
    from prefect_cancel_doctor.kinds.ecs.locate import API_TIMEOUT

    return here.shared("ecs.api", lambda: EcsApi(timeout=API_TIMEOUT))
