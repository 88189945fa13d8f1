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
from prefect_cancel_doctor.model import AttachMode, Cause, InfraKind, StateType, Target, Verdict

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
        from prefect_cancel_doctor.kinds.ecs.view import recall

        if location.pids or (location.container is not None and location.container.running):
            return True
        view = recall(location.description)
        return view is not None and view.running

    def samples_apart(self, location: Location) -> bool:
        return location.container is not None and location.container.attach == AttachMode.SIDECAR

    def sample(self, jobs: list[Job], here: Here, progress: ProgressFn) -> None:
        """A task's containers on this host are Docker containers: sampled as the Docker kind does."""
        from prefect_cancel_doctor.kinds.docker.kind import DockerKind

        DockerKind().sample(jobs, here, progress)

    def gone(self, target: Target, notes: tuple[str, ...]) -> Verdict | None:
        from prefect_cancel_doctor.kinds.docker.facts import container_gone
        from prefect_cancel_doctor.kinds.ecs.facts import task_gone
        from prefect_cancel_doctor.kinds.ecs.view import recall

        view = recall(target.description)
        if view is not None and view.gone:
            return task_gone(view, notes)
        if target.container is not None:  # ECS has not seen it yet: this host's engine has
            return container_gone(target.container, notes)
        return None

    def facts(self, target: Target, cause: Cause, runner_runs: bool) -> tuple[str, ...]:
        from prefect_cancel_doctor.kinds.docker.facts import container_facts
        from prefect_cancel_doctor.kinds.ecs.facts import task_facts
        from prefect_cancel_doctor.kinds.ecs.view import recall

        view = recall(target.description)
        facts = list(task_facts(view)) if view is not None else []
        if view is not None and view.local_container and target.container is not None:
            facts.append(
                f"ECS task {view.name} runs on this host: its container {view.container_name} is Docker "
                f"container {view.local_container[:12]} (the ECS agent's labels)"
            )
            facts.extend(container_facts(target.container))
        return tuple(facts)

    def in_container(self, target: Target) -> ContainerView | None:
        from prefect_cancel_doctor.kinds.ecs.view import recall

        view = recall(target.description)
        c = target.container
        if view is None:
            return None
        name = f"container {view.container_name} of ECS task {view.name}"
        stopped_by = "ECS's StopTask (its agent's `docker stop`)"
        if c is not None:
            return ContainerView(name, c.command or view.command, c.pid1_command, bool(c.init), stopped_by)
        definition = view.flow_definition
        init = definition is not None and definition.init_process_enabled
        return ContainerView(name, view.command, (), init, stopped_by)

    def short_fix(self, cause: Cause) -> str | None:
        from prefect_cancel_doctor.kinds.ecs.facts import ecs_short_fix

        return ecs_short_fix(cause, None)

    def stop_now(self, target: Target, cause: Cause) -> StopNow | None:
        from prefect_cancel_doctor.kinds.ecs.facts import stop_commands
        from prefect_cancel_doctor.kinds.ecs.view import recall

        view = recall(target.description)
        if view is None or not view.running:
            return None
        return StopNow(stop_commands(view), f"ECS task {view.name} stopped")

    def stopper(self, target: Target) -> TaskStopper | None:
        from prefect_cancel_doctor.kinds.ecs.stop import TaskStopper
        from prefect_cancel_doctor.kinds.ecs.view import recall

        view = recall(target.description)
        if view is None or not view.running:
            return None
        container = target.container
        listing = (
            container.processes if container is not None and container.attach is not AttachMode.HOST else None
        )
        return TaskStopper(view, container, listing)


def views_of(here: Here) -> dict[tuple[str, str], TaskView]:
    """The scan's tasks by (cluster, task ARN) as `prepare` read them."""
    made: dict[tuple[str, str], TaskView] = {}
    return here.shared("ecs.views", lambda: made)


def api(here: Here) -> EcsApi:
    """The scan's ECS client (boto3 is imported when it makes its first call)."""
    from prefect_cancel_doctor.clients.ecs_api import EcsApi
    from prefect_cancel_doctor.kinds.ecs.locate import API_TIMEOUT

    return here.shared("ecs.api", lambda: EcsApi(timeout=API_TIMEOUT))
