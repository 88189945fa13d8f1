"""ECS's answers (`DescribeTasks`, `DescribeTaskDefinition`, `DescribeContainerInstances`) as frozen
records: the JSON is read here, once, by the clients' field readers (a value of the wrong type reads
as absent, text is made inert)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prefect_cancel_doctor.clients._fields import as_int, as_mapping, as_str, as_text


@dataclass(frozen=True)
class EcsContainer:
    """One container of a task as `DescribeTasks` reports it."""

    name: str
    last_status: str | None = None
    exit_code: int | None = None
    #: Why it stopped ("OutOfMemoryError: Container killed due to memory usage", ...).
    reason: str | None = None
    #: The runtime's container id (the Docker id on an EC2 container instance).
    runtime_id: str | None = None
    #: ECS Exec's agent in this container: its lastStatus (RUNNING when execute-command works).
    exec_agent: str | None = None


@dataclass(frozen=True)
class EcsTask:
    """One task as `DescribeTasks` reports it: the facts the rules read."""

    arn: str
    cluster_arn: str | None = None
    task_definition_arn: str | None = None
    #: PROVISIONING, PENDING, ACTIVATING, RUNNING, DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED.
    last_status: str | None = None
    desired_status: str | None = None
    #: TaskFailedToStart, EssentialContainerExited, UserInitiated, ServiceSchedulerInitiated,
    #: SpotInterruption, TerminationNotice.
    stop_code: str | None = None
    stopped_reason: str | None = None
    #: ISO 8601 times (UTC), None where ECS gives none.
    created_at: str | None = None
    started_at: str | None = None
    stopping_at: str | None = None
    stopped_at: str | None = None
    #: EC2, FARGATE, EXTERNAL (None with a capacity provider strategy: see `capacity_provider`).
    launch_type: str | None = None
    capacity_provider: str | None = None
    container_instance_arn: str | None = None
    enable_execute_command: bool = False
    containers: tuple[EcsContainer, ...] = ()
    #: The run's overrides by container name: its command (prefect-aws sets the job's command there).
    override_commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: PREFECT__FLOW_RUN_ID from a container override's environment, else the prefect.io/flow-run-id tag.
    flow_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    started_by: str | None = None

    @property
    def task_id(self) -> str:
        """The task's id: the ARN's last part."""
        return self.arn.rsplit("/", 1)[-1]

    @property
    def cluster_name(self) -> str | None:
        return self.cluster_arn.rsplit("/", 1)[-1] if self.cluster_arn else None

    @property
    def on_fargate(self) -> bool:
        return self.launch_type == "FARGATE" or (self.capacity_provider or "").startswith("FARGATE")


@dataclass(frozen=True)
class ContainerDefinition:
    """One container of a task definition: what decides how it stops and whether it can be sampled."""

    name: str
    image: str | None = None
    command: tuple[str, ...] = ()
    entry_point: tuple[str, ...] = ()
    essential: bool = True
    #: Seconds between ECS's SIGTERM and its SIGKILL (None: the default, 30 s).
    stop_timeout: int | None = None
    #: linuxParameters.capabilities.add (SYS_PTRACE lets py-spy read the flow from ECS Exec).
    capabilities_add: tuple[str, ...] = ()
    #: linuxParameters.initProcessEnabled: ECS's init runs as PID 1 and forwards signals.
    init_process_enabled: bool = False


@dataclass(frozen=True)
class TaskDefinition:
    arn: str
    containers: tuple[ContainerDefinition, ...] = ()
    #: The task's pidMode ("task", "host", or None: each container its own PID namespace).
    pid_mode: str | None = None

    def container(self, name: str | None) -> ContainerDefinition | None:
        return next((c for c in self.containers if c.name == name), None)


@dataclass(frozen=True)
class ContainerInstance:
    arn: str
    ec2_instance_id: str | None = None
    status: str | None = None
    agent_connected: bool | None = None


def _time(value: object) -> str | None:
    """An ECS time (botocore gives datetimes; recorded JSON epoch seconds or ISO text) as ISO 8601."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return as_text(value)


def _strings(value: object) -> tuple[str, ...]:
    return tuple(as_text(v) or "" for v in value) if isinstance(value, list) else ()


def _items(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def parse_task(document: object) -> EcsTask | None:
    """A `DescribeTasks` task, else None (no ARN)."""
    doc = as_mapping(document)
    arn = as_str(doc.get("taskArn"))
    if arn is None:
        return None
    containers = []
    for c in _items(doc.get("containers")):
        agents = {as_str(a.get("name")): as_str(a.get("lastStatus")) for a in _items(c.get("managedAgents"))}
        containers.append(
            EcsContainer(
                name=as_text(c.get("name")) or "?",
                last_status=as_text(c.get("lastStatus")),
                exit_code=as_int(c.get("exitCode")),
                reason=as_text(c.get("reason")),
                runtime_id=as_str(c.get("runtimeId")),
                exec_agent=agents.get("ExecuteCommandAgent"),
            )
        )
    commands: dict[str, tuple[str, ...]] = {}
    run_id = None
    for override in _items(as_mapping(doc.get("overrides")).get("containerOverrides")):
        name = as_text(override.get("name")) or "?"
        if isinstance(override.get("command"), list):
            commands[name] = _strings(override.get("command"))
        for variable in _items(override.get("environment")):
            if variable.get("name") == "PREFECT__FLOW_RUN_ID":
                run_id = run_id or as_str(variable.get("value"))
    tags = {
        as_text(t.get("key")) or "": as_text(t.get("value")) or ""
        for t in _items(doc.get("tags"))
        if as_str(t.get("key"))
    }
    return EcsTask(
        arn=arn,
        cluster_arn=as_str(doc.get("clusterArn")),
        task_definition_arn=as_str(doc.get("taskDefinitionArn")),
        last_status=as_text(doc.get("lastStatus")),
        desired_status=as_text(doc.get("desiredStatus")),
        stop_code=as_text(doc.get("stopCode")),
        stopped_reason=as_text(doc.get("stoppedReason")),
        created_at=_time(doc.get("createdAt")),
        started_at=_time(doc.get("startedAt")),
        stopping_at=_time(doc.get("stoppingAt")),
        stopped_at=_time(doc.get("stoppedAt")),
        launch_type=as_text(doc.get("launchType")),
        capacity_provider=as_text(doc.get("capacityProviderName")),
        container_instance_arn=as_str(doc.get("containerInstanceArn")),
        enable_execute_command=doc.get("enableExecuteCommand") is True,
        containers=tuple(containers),
        override_commands=commands,
        flow_run_id=run_id or tags.get("prefect.io/flow-run-id") or None,
        tags=tags,
        started_by=as_text(doc.get("startedBy")),
    )


def parse_task_definition(document: object) -> TaskDefinition | None:
    """A `DescribeTaskDefinition` answer's `taskDefinition`, else None."""
    doc = as_mapping(document)
    arn = as_str(doc.get("taskDefinitionArn"))
    if arn is None:
        return None
    containers = []
    for c in _items(doc.get("containerDefinitions")):
        linux = as_mapping(c.get("linuxParameters"))
        containers.append(
            ContainerDefinition(
                name=as_text(c.get("name")) or "?",
                image=as_text(c.get("image")),
                command=_strings(c.get("command")),
                entry_point=_strings(c.get("entryPoint")),
                essential=c.get("essential") is not False,
                stop_timeout=as_int(c.get("stopTimeout")),
                capabilities_add=_strings(as_mapping(linux.get("capabilities")).get("add")),
                init_process_enabled=linux.get("initProcessEnabled") is True,
            )
        )
    return TaskDefinition(arn, tuple(containers), as_text(doc.get("pidMode")))


def parse_container_instance(document: object) -> ContainerInstance | None:
    doc = as_mapping(document)
    arn = as_str(doc.get("containerInstanceArn"))
    if arn is None:
        return None
    connected = doc.get("agentConnected")
    return ContainerInstance(
        arn,
        as_text(doc.get("ec2InstanceId")),
        as_text(doc.get("status")),
        connected if isinstance(connected, bool) else None,
    )
