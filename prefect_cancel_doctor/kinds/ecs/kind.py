"""The ECS kind: a run in a task of prefect-aws's ECS worker, read through the ECS API; sampled
through this host's Docker engine when this host is the task's EC2 container instance (the ECS
agent's labels name the task's containers), else `not_attachable` with where and how it can be."""

from __future__ import annotations

import dataclasses
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
    StopNow,
)
from prefect_cancel_doctor.kinds.ecs.view import TaskView, recall, remember
from prefect_cancel_doctor.model import (
    AttachMode,
    Cause,
    ContainerInfo,
    ContainerProcess,
    InfraKind,
    StateType,
    Target,
    Verdict,
)

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.ecs_api import EcsApi
    from prefect_cancel_doctor.clients.prefect_records import FlowRun
    from prefect_cancel_doctor.core.options import Options

#: Seconds an ECS API call may take.
API_TIMEOUT = 10.0


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
        from prefect_cancel_doctor.kinds.ecs.read import read_tasks

        key = (ref.namespace or "", ref.job or "")
        views = views_of(here)
        view = views.get(key)
        if view is None:  # not prepared (a caller outside the scan): read it alone
            view = read_tasks([key], api(here))[key]
        cancelling = run.state is not None and run.state_type == StateType.CANCELLING
        since = parse_time(run.state.timestamp) if cancelling and run.state else None
        return locate_task(run.id, view, here.options, since=since)

    def still_there(self, location: Location) -> bool:
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

        view = recall(target.description)
        if view is not None and view.gone:
            return task_gone(view, notes)
        if target.container is not None:  # ECS has not seen it yet: this host's engine has
            return container_gone(target.container, notes)
        return None

    def facts(self, target: Target, cause: Cause, runner_runs: bool) -> tuple[str, ...]:
        from prefect_cancel_doctor.kinds.docker.facts import container_facts
        from prefect_cancel_doctor.kinds.ecs.facts import task_facts

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

        view = recall(target.description)
        if view is None or not view.running:
            return None
        return StopNow(stop_commands(view), f"ECS task {view.name} stopped")

    def stopper(self, target: Target) -> TaskStopper | None:
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

    return here.shared("ecs.api", lambda: EcsApi(timeout=API_TIMEOUT))


def locate_task(run_id: str | None, view: TaskView, options: Options, *, since: object = None) -> Location:
    """Where the run's task is, from what ECS and this host's Docker engine say; never samples."""
    from prefect_cancel_doctor.kinds.ecs.facts import next_step

    description = f"ECS task {view.name}"
    if view.error is not None:
        location = Location(
            InfraKind.ECS,
            description,
            unreachable=f"the run is ECS task {view.name}, but the ECS API could not be read: {view.error}",
        )
    elif view.task is not None and view.task.flow_run_id and run_id and view.task.flow_run_id != run_id:
        location = Location(
            InfraKind.ECS,
            description,
            unreachable=(
                f"ECS task {view.name} belongs to flow run {view.task.flow_run_id}, not to this run "
                "(its PREFECT__FLOW_RUN_ID / prefect.io/flow-run-id tag): not read"
            ),
        )
    elif view.local_container is not None:
        owner = run_id or (view.task.flow_run_id if view.task else None)
        location = _on_this_host(owner, view, options, since)
        description = location.description
    elif view.gone:
        location = Location(InfraKind.ECS, description + " (stopped)", notes=view.notes)
        description = location.description
    else:
        location = Location(InfraKind.ECS, description, notes=view.notes, unreachable=next_step(view))
    remember(description, view)
    return location


def _on_this_host(run_id: str | None, view: TaskView, options: Options, since: object) -> Location:
    from datetime import datetime

    from prefect_cancel_doctor.clients.docker_api import DockerClient, resolve_endpoint
    from prefect_cancel_doctor.kinds.docker.locate import locate_container

    container_id = view.local_container or ""
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
        f"ECS task {view.name} runs on this host: its container {view.container_name} is Docker container "
        f"{container_id[:12]}, found by the ECS agent's labels"
    )
    return dataclasses.replace(
        found,
        kind=InfraKind.ECS,
        description=f"ECS task {view.name} on this host (Docker container {container_id[:12]})",
        notes=(note, *view.notes, *found.notes),
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
            f"ECS task {view.name} {stop_story(view)}: nothing of it runs to inspect",
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


@dataclass(frozen=True)
class TaskStopper:
    """`resolve`'s steps for a running ECS task: after its engine's SIGTERM (by host PID, where this
    host runs it), StopTask (ECS sends SIGTERM, then SIGKILL after the container's stopTimeout), then,
    on this host, `docker kill` of its container if it still runs."""

    view: TaskView
    container: ContainerInfo | None = None
    #: The Docker engine's listing of the container's processes (host PIDs), where the samples lack them.
    listing: tuple[ContainerProcess, ...] | None = None

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def what(self) -> str:
        return f"ECS task {self.view.name}"

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
            lines.append(f"SIGTERM the flow engine {engine_pid} (host PID) of ECS task {self.view.name}")
        lines.append(
            f"`{stop_commands(self.view)[0]}` if it still runs after {grace:.0f} s "
            f"(ECS: SIGTERM, then SIGKILL after {self.view.stop_timeout} s)"
        )
        if self.container is not None:
            lines.append(f"docker kill {self.container.id[:12]} if it still runs then")
        return lines

    def stop(
        self,
        grace: float,
        wait: Callable[[str, float, Callable[[], bool]], bool],
        record: Callable[[str], None],
        engine_signalled: bool,
    ) -> bool:
        from prefect_cancel_doctor.clients.ecs_api import EcsApi, EcsError
        from prefect_cancel_doctor.kinds.ecs.facts import STOP_REASON
        from prefect_cancel_doctor.kinds.ecs.read import read_tasks

        view, ecs = self.view, EcsApi(timeout=API_TIMEOUT)
        key = (view.cluster, view.task_arn)

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
            wait(f"waiting for ECS task {view.name} to stop", grace, lambda: not running())
        if running():
            try:
                ecs.stop_task(view.cluster, view.task_arn, STOP_REASON)
            except EcsError as exc:
                record(f"aws ecs stop-task failed: {exc}")
            else:
                record("aws ecs stop-task")
            wait(
                f"waiting for ECS task {view.name} to stop",
                view.stop_timeout + KILL_WAIT_SECONDS,
                lambda: not running(),
            )
        if self.container is not None and running():
            from prefect_cancel_doctor.clients.docker_api import DockerClient

            with DockerClient() as client:
                client.kill(self.container.id)
            record("docker kill")
            wait(f"waiting for ECS task {view.name} to stop", KILL_WAIT_SECONDS, lambda: not running())
        return running()
