"""Real flow runs stuck in Cancelling in ECS tasks: the ECS API from moto, the tasks' containers on
this host's Docker engine.

No ECS can run here, so the ECS API is **moto**'s in server mode (`ThreadedMotoServer` on a local
port, reached through boto3's endpoint setting, ``AWS_ENDPOINT_URL``), in this process: the harness
records into moto's tasks what ECS's agent would report (a stop's code, reason and time, each
container's exit code and reason), holds moto's task state machine still (manual progression: it
would otherwise move a task on each read) and counts the DescribeTasks calls it answers.

A task "on this EC2 host" is what the ECS agent makes of it: a real Docker container on the local
engine with the agent's labels (``com.amazonaws.ecs.task-arn``, ``…container-name``, ``…cluster``),
running the real flow (`python -m prefect.engine`: a job command that runs no Runner) against the real
local Prefect server, from the Docker harness's tiny image (`docker_harness.build_image`). A task
elsewhere (Fargate) or stopped exists in moto only.

`moto_ecs_server()` starts moto with a cluster, a task definition and, for EC2 tasks on another host,
one registered container instance; `ecs_demo_environment()` stages the runs of `ECS_SCENARIOS` (for
`demo --ecs` and tests/ecs), each cancelled and then made stuck as its recipe says, and removes
everything on exit: the containers, the image, moto, the server it started.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.clients.docker_api import DockerClient, DockerError
from prefect_cancel_doctor.demo.catalog import marker_line
from prefect_cancel_doctor.demo.docker_harness import (
    DOCKER_SCENARIO_DIR,
    OWNER_LABEL,
    SCENARIO_LABEL,
    build_image,
    create_host_container,
    remove_leftovers,
    remove_session,
    staging_dirs,
)
from prefect_cancel_doctor.demo.harness import HarnessError, LocalPrefect, StageClock, StagedEnvironment
from prefect_cancel_doctor.errors import ConfigurationError
from prefect_cancel_doctor.model import CallKind, Cause

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLUSTER = "prefect-prod"
#: The task definitions' family and the flow container's name (prefect-aws's defaults).
FAMILY = "prefect"
CONTAINER = "prefect"
#: The stopTimeout of the cluster's first task definition.
STOP_TIMEOUT = 45
#: The ECS agent's labels on a task's Docker containers (what the doctor looks them up by).
TASK_ARN_LABEL = "com.amazonaws.ecs.task-arn"
CONTAINER_NAME_LABEL = "com.amazonaws.ecs.container-name"
CLUSTER_LABEL = "com.amazonaws.ecs.cluster"
FAMILY_LABEL = "com.amazonaws.ecs.task-definition-family"
VERSION_LABEL = "com.amazonaws.ecs.task-definition-version"
#: prefect-aws's default job command (a Runner), and one that runs the engine without a Runner.
RUNNER_COMMAND = ("prefect", "flow-run", "execute")
ENGINE_COMMAND = ("python", "-m", "prefect.engine")
#: What prefect-aws's worker gives StopTask (`_stop_task`).
WORKER_STOP_REASON = "Stopped by Prefect worker"
#: The ECS work pool of the staged runs (no worker polls it: the harness submits as prefect-aws does).
ECS_POOL = "pcd-ecs"
#: How to install what `demo --ecs` needs beside the `prefect` extra, from the checkout.
INSTALL_COMMAND = "pip install -e '.[prefect,demo-ecs]'"
#: A flow for the runs whose tasks are moto's only (nothing runs it).
FLOW = """from prefect import flow


@flow
def etl() -> None:
    pass
"""


def require_moto() -> None:
    """moto's server and boto3 importable, else a `ConfigurationError` naming what to install."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"the ECS demo serves the ECS API from moto, which is not installed ({exc}): {INSTALL_COMMAND} "
            "(from the checkout; moto[server] and boto3)"
        ) from None


# -- moto's ECS ----------------------------------------------------------------------------


@dataclass
class MotoEcs:
    """moto's ECS, EC2 and IAM on a local port, with the cluster and task definition the runs use."""

    endpoint: str
    task_definition: str
    #: An EC2 instance registered as a container instance of the cluster (another host than this
    #: one), or "" without one.
    ec2_instance_id: str
    #: DescribeTasks calls the server answered, by cluster.
    describe_calls: list[str]
    #: Task definitions registered for `definition_for`, by stopTimeout.
    definitions: dict[int, str] = field(default_factory=dict)

    def client(self, service: str = "ecs") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def backend_task(self, arn: str, cluster: str = CLUSTER) -> Any:
        """moto's own record of a task (what the harness writes ECS's reports into)."""
        from moto.ecs.models import ecs_backends

        return ecs_backends[ACCOUNT][REGION].tasks[cluster][arn]

    def definition_for(self, stop_timeout: int) -> str:
        """The ARN of a task definition whose flow container has this stopTimeout (registered once)."""
        if stop_timeout not in self.definitions:
            self.definitions[stop_timeout] = register_definition(self.client(), stop_timeout, memory=128)
        return self.definitions[stop_timeout]

    def run_task(
        self,
        run_id: str,
        *,
        launch_type: str = "FARGATE",
        execute: bool = False,
        command: Iterable[str] = RUNNER_COMMAND,
        task_definition: str | None = None,
        started_at: datetime | None = None,
        cluster: str = CLUSTER,
    ) -> str:
        """A task as prefect-aws's worker starts it (its container override carries the run's id and
        command, its tags the run's labels); returns its ARN. Started 20 minutes ago unless said."""
        answer = self.client().run_task(
            cluster=cluster,
            taskDefinition=task_definition or self.task_definition,
            launchType=launch_type,
            enableExecuteCommand=execute,
            overrides={
                "containerOverrides": [
                    {
                        "name": CONTAINER,
                        "command": list(command),
                        "environment": [{"name": "PREFECT__FLOW_RUN_ID", "value": run_id}],
                    }
                ]
            },
            tags=[{"key": "prefect.io/flow-run-id", "value": run_id}],
        )
        if not answer["tasks"]:
            raise HarnessError(f"moto placed no task for run {run_id}: {answer.get('failures')}")
        arn = str(answer["tasks"][0]["taskArn"])
        task = self.backend_task(arn, cluster)
        task.enable_execute_command = execute  # moto does not keep it
        task.started_at = started_at or datetime.now(timezone.utc) - timedelta(minutes=20)
        return arn

    def stop_task(
        self,
        arn: str,
        *,
        code: str,
        reason: str,
        exit_code: int | None,
        why: str | None,
        seconds_ago: float = 300.0,
    ) -> None:
        """What ECS records of a stop, as its agent reports it (by default 5 minutes ago)."""
        task = self.backend_task(arn)
        when = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
        task.last_status, task.desired_status = "STOPPED", "STOPPED"
        task.stop_code, task.stopped_reason = code, reason
        task.stopping_at, task.stopped_at = when, when
        for container in task.containers:
            container.last_status = "STOPPED"
            container.exit_code = container.exitCode = exit_code
            container.reason = why

    def stopping(self, arn: str, *, minutes_ago: float) -> None:
        """StopTask asked, the task still RUNNING."""
        self.still_stopping(arn, datetime.now(timezone.utc) - timedelta(minutes=minutes_ago))
        task = self.backend_task(arn)
        task.stop_code, task.stopped_reason = "UserInitiated", WORKER_STOP_REASON

    def still_stopping(self, arn: str, since: datetime) -> None:
        """What ECS says of a task StopTask was called for (desiredStatus STOPPED, stoppingAt, the
        stop code) while its containers still run: lastStatus RUNNING (moto's StopTask says STOPPED
        at once, as if the containers were gone)."""
        task = self.backend_task(arn)
        task.last_status, task.desired_status = "RUNNING", "STOPPED"
        task.stopping_at, task.stopped_at = since, None
        task.stop_code = "UserInitiated"
        for container in task.containers:
            container.last_status = "RUNNING"

    def aws_env(self) -> dict[str, str]:
        """boto3's own settings pointing at moto (no profile, config file or instance metadata)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def env(self, **extra: str) -> dict[str, str]:
        """The doctor's environment: this one without Prefect, doctor or AWS settings, boto3's
        pointing at moto, no Docker engine (unless `extra` names one), plus `extra`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_", "PCD_"))}
        env.update(self.aws_env(), DOCKER_HOST="unix:///nonexistent/docker.sock")
        env.update(extra)
        return env


def register_definition(ecs: Any, stop_timeout: int, *, memory: int = 512) -> str:
    """Register a task definition of prefect-aws's shape (one essential container "prefect", its
    command a Runner) whose container has `stop_timeout`; returns its ARN."""
    definition = ecs.register_task_definition(
        family=FAMILY,
        containerDefinitions=[
            {
                "name": CONTAINER,
                "image": "prefecthq/prefect:3-latest",
                "memory": memory,
                "cpu": 256,
                "essential": True,
                "command": list(RUNNER_COMMAND),
                "stopTimeout": stop_timeout,
            }
        ],
    )["taskDefinition"]
    return str(definition["taskDefinitionArn"])


@contextlib.contextmanager
def moto_ecs_server(
    *, clusters: Iterable[str] = (CLUSTER,), container_instance: bool = True
) -> Iterator[MotoEcs]:
    """moto's ECS in server mode on 127.0.0.1 (this process), with `clusters`, a task definition
    (stopTimeout `STOP_TIMEOUT`) and, if `container_instance`, an EC2 instance registered in the
    first cluster; its tasks move only when the harness moves them. Stopped and reset on exit."""
    require_moto()
    from moto.moto_api import state_manager
    from moto.server import ThreadedMotoServer

    # Its web server logs every request at INFO (on stderr, in the middle of the demo's narration).
    requests_log = logging.getLogger("werkzeug")
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})
    try:
        host, port = server.get_host_and_port()
        staged = MotoEcs(f"http://{host}:{port}", "", "", [])
        ecs = staged.client()
        names = list(clusters)
        for name in names:
            ecs.create_cluster(clusterName=name)
        staged.task_definition = register_definition(ecs, STOP_TIMEOUT)
        staged.definitions[STOP_TIMEOUT] = staged.task_definition
        if container_instance:
            ec2 = staged.client("ec2")
            image = ec2.describe_images()["Images"][0]["ImageId"]
            instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
            document = json.dumps({"instanceId": instance, "region": REGION, "accountId": ACCOUNT})
            ecs.register_container_instance(cluster=names[0], instanceIdentityDocument=document)
            staged.ec2_instance_id = instance
        count_describe_tasks(staged.describe_calls)
        yield staged
    finally:
        state_manager.unset_transition("ecs::task")
        _reset_backends()
        server.stop()
        requests_log.setLevel(level)


def count_describe_tasks(calls: list[str]) -> None:
    """Append the cluster of every DescribeTasks moto answers to `calls` (until moto is reset)."""
    from moto.ecs.models import ecs_backends

    backend = ecs_backends[ACCOUNT][REGION]
    original: Callable[..., Any] = backend.describe_tasks

    def counting(cluster_str: str, tasks: Any) -> Any:
        calls.append(cluster_str)
        return original(cluster_str, tasks)

    backend.describe_tasks = counting  # type: ignore[method-assign]


def _reset_backends() -> None:
    """Forget every cluster, task and instance (moto's backends live as long as this process)."""
    with contextlib.suppress(Exception):
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.reset()


# -- the scenarios ---------------------------------------------------------------------------


class EcsRecipe(str, enum.Enum):
    """How the harness gets a run in an ECS task stuck."""

    #: A Fargate task (moto only: nothing of it runs here), RUNNING; the run is cancelled.
    FARGATE_RUNNING = "fargate_running"
    #: The run is cancelled, then its task's essential container is OOM-killed (moto only): ECS
    #: records the stop, nothing marks the run.
    STOPPED_OOM = "stopped_oom"
    #: On this host, the engine without a Runner: the run is cancelled and nothing acts on it.
    CANCEL_UNOBSERVED = "cancel_unobserved"
    #: On this host, the engine without a Runner: the run is cancelled; then StopTask (moto records
    #: it: desiredStatus STOPPED, stoppingAt), whose SIGTERM the ECS agent sends PID 1 (the engine)
    #: as `docker stop` does; the flow is in a C call, so it stays pending; the agent's SIGKILL after
    #: the stopTimeout never comes (a disconnected agent, say), and the harness waits past it.
    STOP_PAST_TIMEOUT = "stop_past_timeout"


@dataclass(frozen=True)
class EcsScenario:
    """One way for a run in an ECS task to get stuck."""

    name: str
    recipe: EcsRecipe
    expected_cause: Cause
    #: The blocking call's kind the doctor should report (None: no blocking call).
    expected_kind: CallKind | None
    description: str
    #: The flow program (a task on this host runs it) and its `@flow` function; None: `FLOW`.
    path: Path | None = None
    flow_function: str = "etl"
    #: The stopTimeout of the task's flow container (its task definition's).
    stop_timeout: int = STOP_TIMEOUT
    #: The secondary finding (`Verdict.also`) the doctor should report, if any.
    expected_also: Cause | None = None

    @property
    def on_host(self) -> bool:
        """Whether the task's container runs on this host's Docker engine."""
        return self.recipe in (EcsRecipe.CANCEL_UNOBSERVED, EcsRecipe.STOP_PAST_TIMEOUT)

    @property
    def file(self) -> str:
        return self.path.name if self.path is not None else "ecs_flow.py"

    @property
    def entrypoint(self) -> str:
        return f"{self.file}:{self.flow_function}"


_BUSY_DB = DOCKER_SCENARIO_DIR / "stuck_docker_busy_db.py"
_NO_RUNNER = DOCKER_SCENARIO_DIR / "stuck_docker_no_runner.py"

_CATALOG = (
    EcsScenario(
        name="ecs_fargate",
        recipe=EcsRecipe.FARGATE_RUNNING,
        expected_cause=Cause.NOT_ATTACHABLE,
        expected_kind=None,
        description="a Fargate task, RUNNING, started without ECS Exec: no host to run the doctor on; "
        "the execute-command line and what the task lacks for it",
    ),
    EcsScenario(
        name="ecs_oom",
        recipe=EcsRecipe.STOPPED_OOM,
        expected_cause=Cause.INFRASTRUCTURE_GONE,
        expected_kind=None,
        description="cancelled, then its essential container was OOM-killed (exit 137): ECS stopped the "
        "task, the run stays Cancelling",
    ),
    EcsScenario(
        name="ecs_c_call",
        recipe=EcsRecipe.CANCEL_UNOBSERVED,
        expected_cause=Cause.CANCEL_NOT_OBSERVED,
        expected_kind=CallKind.DATABASE,
        description="on this host, no Runner; the flow waits in a C call (a SQLite busy wait): nothing "
        "sent it a SIGTERM, and one would stay pending",
        path=_BUSY_DB,
        flow_function="busy_db_flow",
        expected_also=Cause.SIGNAL_PENDING,
    ),
    EcsScenario(
        name="ecs_stop_timeout",
        recipe=EcsRecipe.STOP_PAST_TIMEOUT,
        expected_cause=Cause.SIGNAL_PENDING,
        expected_kind=CallKind.DATABASE,
        description="on this host, no Runner; StopTask's SIGTERM stays pending in a C call (a SQLite busy "
        "wait), and the task runs on past its stopTimeout (ECS's SIGKILL never came)",
        path=_BUSY_DB,
        flow_function="busy_db_flow",
        stop_timeout=5,
    ),
    EcsScenario(
        name="ecs_no_runner",
        recipe=EcsRecipe.CANCEL_UNOBSERVED,
        expected_cause=Cause.CANCEL_NOT_OBSERVED,
        expected_kind=CallKind.SLEEP,
        description="on this host, its command `python -m prefect.engine`: no Runner sees the cancel",
        path=_NO_RUNNER,
        flow_function="no_runner_flow",
    ),
    # For `resolve`: StopTask does not stop its container (moto runs none), and ECS's SIGKILL comes
    # from no agent; its stopTimeout is short, so resolve's wait for it is too.
    EcsScenario(
        name="ecs_resolve",
        recipe=EcsRecipe.CANCEL_UNOBSERVED,
        expected_cause=Cause.CANCEL_NOT_OBSERVED,
        expected_kind=CallKind.DATABASE,
        description="on this host, no Runner, in a C call (its SIGTERM stays pending); stopTimeout 2 s",
        path=_BUSY_DB,
        flow_function="busy_db_flow",
        stop_timeout=2,
        expected_also=Cause.SIGNAL_PENDING,
    ),
)

#: Every ECS scenario by name.
ECS_SCENARIOS: dict[str, EcsScenario] = {scenario.name: scenario for scenario in _CATALOG}
#: What `demo --ecs` stages.
DEFAULT_ECS_DEMO_SCENARIOS = ("ecs_fargate", "ecs_oom", "ecs_stop_timeout", "ecs_no_runner")


def select_ecs_scenarios(names: Iterable[str] | None) -> list[EcsScenario]:
    """The scenarios named (the demo's for None), in catalog order; unknown names raise KeyError."""
    wanted = set(DEFAULT_ECS_DEMO_SCENARIOS if names is None else names)
    unknown = sorted(wanted - set(ECS_SCENARIOS))
    if unknown:
        raise KeyError(f"unknown ECS scenario(s) {', '.join(unknown)}; known: {', '.join(ECS_SCENARIOS)}")
    return [s for s in _CATALOG if s.name in wanted]


# -- the environment -------------------------------------------------------------------------


@dataclass(frozen=True)
class StuckTaskRun:
    """One staged run in an ECS task, with what the doctor should say about it."""

    scenario: str
    run_id: str
    run_name: str
    cluster: str
    task_arn: str
    #: `infrastructure_pid` as prefect-aws records it ("<cluster>::<task ARN>").
    infrastructure_pid: str
    #: Docker id of the task's flow container on this host (None: the task is moto's only).
    container_id: str | None
    expected_cause: Cause
    expected_kind: CallKind | None
    expected_also: Cause | None
    stop_timeout: int
    #: (file, line) the doctor should name as the blocking call, or None.
    expected_location: tuple[str, int] | None
    #: The ready file the flow wrote (its `.sigterm` witness beside it).
    ready_path: Path | None
    expected_state: str = "CANCELLING"

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for printing."""
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "task": f"{self.cluster}/{self.task_id}",
            "container_id": self.container_id,
            "expected_cause": self.expected_cause.value,
            "expected_location": list(self.expected_location) if self.expected_location else None,
        }


@dataclass
class EcsDemoEnvironment(StagedEnvironment[StuckTaskRun]):
    """The staged server, moto's ECS and the runs; `doctor_env()` points the doctor at them."""

    harness: LocalPrefect
    moto: MotoEcs
    runs: list[StuckTaskRun]
    #: The owner label of this session's containers and image ("" without a task on this host).
    owner: str
    timings: dict[str, float] = field(default_factory=dict)

    def doctor_env(self) -> dict[str, str]:
        """What the doctor needs beside PREFECT_API_URL to read these tasks: boto3's settings for
        moto (its endpoint, region and its keys, which moto takes as they are)."""
        wanted = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return {k: v for k, v in self.moto.aws_env().items() if k in wanted}


@contextlib.contextmanager
def ecs_demo_environment(
    scenarios: Iterable[str] | None = None,
    *,
    harness: LocalPrefect | None = None,
    moto: MotoEcs | None = None,
    client: DockerClient | None = None,
    log: Callable[[str], None] = print,
    ready_timeout: float = 240.0,
    ui: bool = False,
) -> Iterator[EcsDemoEnvironment]:
    """Real runs stuck in Cancelling in ECS tasks; everything started here is removed on exit.

    `harness` and `moto` reuse a running server and moto (the tests' session ones); else each is
    started here (the server serving Prefect's UI if `ui`). A task on this host needs a Docker
    engine (`client`, else the default one): `DockerError` without one; `HarnessError` when a stage
    does not happen; `ConfigurationError` without moto."""
    chosen = select_ecs_scenarios(scenarios)
    require_moto()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        docker: DockerClient | None = None
        owner = ""
        if any(s.on_host for s in chosen):
            docker = client or stack.enter_context(DockerClient(timeout=30.0))
            docker.ping()
            owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            remove_leftovers(docker, log)
            stack.callback(remove_session, docker, owner, log)
        if moto is None:
            moto = stack.enter_context(moto_ecs_server())
            log(f"moto's ECS API (server mode) at {moto.endpoint}, cluster {CLUSTER}")
        if harness is None:
            harness = stack.enter_context(LocalPrefect(log=log, ui=ui))
        environment = _stage(harness, moto, docker, chosen, owner, log, ready_timeout)
        log(f"{len(environment.runs)} stuck ECS run(s) ready in {time.monotonic() - started:.0f} s")
        yield environment
        log("cleaning up: the tasks' containers, the image, moto, the server")


@dataclass
class _Staged:
    scenario: EcsScenario
    run_id: str
    deployment_id: str
    ready_path: Path | None
    task_arn: str = ""
    container_id: str | None = None


def _stage(
    harness: LocalPrefect,
    moto: MotoEcs,
    docker: DockerClient | None,
    scenarios: list[EcsScenario],
    owner: str,
    log: Callable[[str], None],
    ready_timeout: float,
) -> EcsDemoEnvironment:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    clock = StageClock()
    flows_dir, ready_dir, mounts = staging_dirs(
        harness.workdir, "ecs", (s.path for s in scenarios if s.path is not None)
    )
    (flows_dir / "ecs_flow.py").write_text(FLOW)
    with contextlib.suppress(ObjectAlreadyExists):
        harness.client.create_work_pool(WorkPoolCreate(name=ECS_POOL, type="ecs", base_job_template={}))
    deployments: dict[str, str] = {}
    staged: list[_Staged] = []
    for scenario in scenarios:
        if scenario.entrypoint not in deployments:
            deployments[scenario.entrypoint] = harness.deploy(
                flow_name=_flow_name(flows_dir / scenario.file),
                entrypoint=scenario.entrypoint,
                directory=flows_dir,
                pool=ECS_POOL,
                name="ecs",
            )
        deployment = deployments[scenario.entrypoint]
        ready = ready_dir / scenario.name if scenario.on_host else None
        run_id = harness.create_run(deployment, {"ready_path": str(ready)} if ready else {})
        staged.append(_Staged(scenario, run_id, deployment, ready))
    clock.lap("deploy")

    on_host = [item for item in staged if item.scenario.on_host]
    image = ""
    if on_host:
        assert docker is not None
        image = build_image(docker, owner, owner)
        clock.lap("image")
    for item in staged:
        _submit(harness, moto, docker, item, image, mounts, owner)
    log(f"submitted {len(staged)} ECS task(s) as prefect-aws's worker does ({len(on_host)} on this host)")
    if on_host:
        assert docker is not None
        _wait_ready(harness, docker, on_host, ready_timeout)
        log("every task on this host runs its flow at its blocking line")
    clock.lap("start_runs")

    for item in staged:
        state = harness.cancel_run(item.run_id)
        if state != "CANCELLING":
            raise harness.error(f"run {item.run_id} ({item.scenario.name}) is {state} after its cancel")
    log(f"cancelled {len(staged)} run(s)")
    for item in staged:
        _get_stuck(harness, moto, docker, item, log)
    clock.lap("stuck")
    runs = [_stuck_run(harness, item, flows_dir) for item in staged]
    _verify(harness, moto, docker, runs)
    clock.lap("verify")
    return EcsDemoEnvironment(harness, moto, runs, owner, clock.timings)


def _flow_name(path: Path) -> str:
    text = path.read_text()
    marker = '@flow(name="'
    if marker not in text:
        return "etl"
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


def _submit(
    harness: LocalPrefect,
    moto: MotoEcs,
    docker: DockerClient | None,
    item: _Staged,
    image: str,
    mounts: list[str],
    owner: str,
) -> None:
    """What prefect-aws's worker does for a run (Pending, RunTask with the run's id and command in the
    container override, `infrastructure_pid`), and for a task on this host what the ECS agent does
    (the flow container, with its labels)."""
    scenario = item.scenario
    harness.propose_pending(item.run_id)
    if not scenario.on_host:
        item.task_arn = moto.run_task(
            item.run_id, launch_type="FARGATE", started_at=datetime.now(timezone.utc)
        )
        harness.force_state(item.run_id, "RUNNING")  # its Runner started it, somewhere
        _record_infrastructure(harness, item)
        return
    assert docker is not None
    definition = moto.definition_for(scenario.stop_timeout)
    item.task_arn = moto.run_task(
        item.run_id,
        launch_type="EC2",
        command=ENGINE_COMMAND,
        task_definition=definition,
        started_at=datetime.now(timezone.utc),
    )
    _record_infrastructure(harness, item)
    revision = definition.rsplit(":", 1)[-1]
    item.container_id = create_host_container(
        docker,
        image,
        [f"{sys.prefix}/bin/python", "-m", "prefect.engine"],
        mounts,
        {
            TASK_ARN_LABEL: item.task_arn,
            CONTAINER_NAME_LABEL: CONTAINER,
            CLUSTER_LABEL: CLUSTER,
            FAMILY_LABEL: FAMILY,
            VERSION_LABEL: revision,
            OWNER_LABEL: owner,
            SCENARIO_LABEL: scenario.name,
        },
        env=[
            f"PREFECT_API_URL={harness.api_url}",
            f"PREFECT__FLOW_RUN_ID={item.run_id}",
            "PREFECT_HOME=/tmp/prefect-home",
            "PREFECT_LOGGING_COLORS=false",
            "PYTHONUNBUFFERED=1",
        ],
        # The ECS agent's names: ecs-<family>-<revision>-<container>-<random>.
        name=f"ecs-{FAMILY}-{revision}-{CONTAINER}-{scenario.name.replace('_', '-')}-{owner}",
    )
    docker.start(item.container_id)


def _record_infrastructure(harness: LocalPrefect, item: _Staged) -> None:
    harness.client.update_flow_run(uuid.UUID(item.run_id), infrastructure_pid=f"{CLUSTER}::{item.task_arn}")


def _wait_ready(harness: LocalPrefect, docker: DockerClient, items: list[_Staged], timeout: float) -> None:
    pending = {item.run_id: item for item in items}

    def container_log(item: _Staged) -> str:
        assert item.container_id is not None
        out, err = docker.logs(item.container_id)
        return (out + err).decode(errors="replace")[-3000:]

    def check() -> bool:
        for run_id, run in harness.read_runs(list(pending)).items():
            item = pending[run_id]
            assert item.container_id is not None and item.ready_path is not None
            state = run.state.type.value if run.state is not None else "NONE"
            running = docker.inspect(item.container_id).running
            if (run.state is not None and run.state.is_final()) or not running:
                raise harness.error(
                    f"run {run_id} ({item.scenario.name}) is {state}, its container {item.container_id[:12]} "
                    f"{'runs' if running else 'exited'}:\n{container_log(item)}"
                )
            if state == "RUNNING" and item.ready_path.exists():
                del pending[run_id]
        return not pending

    harness.wait_until(
        check,
        timeout,
        lambda: (
            "the tasks' flows at their blocking line: " + ", ".join(i.scenario.name for i in pending.values())
        ),
        interval=0.25,
    )


def _get_stuck(
    harness: LocalPrefect,
    moto: MotoEcs,
    docker: DockerClient | None,
    item: _Staged,
    log: Callable[[str], None],
) -> None:
    scenario = item.scenario
    if scenario.recipe is EcsRecipe.STOPPED_OOM:
        moto.stop_task(
            item.task_arn,
            code="EssentialContainerExited",
            reason="Essential container in task exited",
            exit_code=137,
            why="OutOfMemoryError: Container killed due to memory usage",
            seconds_ago=0,
        )
        log(f"{scenario.name}: its essential container was OOM-killed; ECS stopped the task")
    elif scenario.recipe is EcsRecipe.STOP_PAST_TIMEOUT:
        assert docker is not None and item.container_id is not None and item.ready_path is not None
        moto.client().stop_task(cluster=CLUSTER, task=item.task_arn, reason=WORKER_STOP_REASON)
        asked = datetime.now(timezone.utc)
        moto.still_stopping(item.task_arn, asked)
        docker.kill(item.container_id, "SIGTERM")  # the ECS agent's `docker stop`, first step
        witness = Path(str(item.ready_path) + ".sigterm")
        harness.wait_until(witness.exists, 30, f"{scenario.name}: the engine to get StopTask's SIGTERM")
        past = asked + timedelta(seconds=scenario.stop_timeout + 1)
        harness.wait_until(
            lambda: datetime.now(timezone.utc) > past, scenario.stop_timeout + 30, "the stopTimeout to pass"
        )
        log(
            f"{scenario.name}: StopTask; its SIGTERM is pending in the flow's C call, and the task runs on "
            f"past its stopTimeout of {scenario.stop_timeout} s"
        )


def _stuck_run(harness: LocalPrefect, item: _Staged, flows_dir: Path) -> StuckTaskRun:
    scenario = item.scenario
    location = None
    if scenario.expected_kind is not None and scenario.path is not None:
        deployed = flows_dir / scenario.file
        location = (str(deployed), marker_line(deployed))
    return StuckTaskRun(
        scenario=scenario.name,
        run_id=item.run_id,
        run_name=harness.read_run(item.run_id).name,
        cluster=CLUSTER,
        task_arn=item.task_arn,
        infrastructure_pid=f"{CLUSTER}::{item.task_arn}",
        container_id=item.container_id,
        expected_cause=scenario.expected_cause,
        expected_kind=scenario.expected_kind,
        expected_also=scenario.expected_also,
        stop_timeout=scenario.stop_timeout,
        expected_location=location,
        ready_path=item.ready_path,
    )


def _verify(
    harness: LocalPrefect, moto: MotoEcs, docker: DockerClient | None, runs: list[StuckTaskRun]
) -> None:
    """Every run Cancelling, every task as its scenario says, so a broken stage fails loudly here."""
    states = harness.read_runs([r.run_id for r in runs])
    problems = []
    for run in runs:
        state = states[run.run_id].state
        state_type = state.type.value if state is not None else None
        if state_type != run.expected_state:
            problems.append(f"{run.scenario}: state {state_type}, expected {run.expected_state}")
        last = moto.backend_task(run.task_arn).last_status
        wanted = "STOPPED" if ECS_SCENARIOS[run.scenario].recipe is EcsRecipe.STOPPED_OOM else "RUNNING"
        if last != wanted:
            problems.append(f"{run.scenario}: task {run.task_id} is {last}, expected {wanted}")
        if run.container_id is not None:
            assert docker is not None
            try:
                running = docker.inspect(run.container_id).running
            except DockerError as exc:
                running, problems = False, [*problems, f"{run.scenario}: {exc}"]
            if not running:
                problems.append(f"{run.scenario}: container {run.container_id[:12]} is not running")
    if problems:
        raise harness.error("staged ECS runs are not as expected:\n  " + "\n  ".join(problems))


@contextlib.contextmanager
def doctor_environ(values: Mapping[str, str]) -> Iterator[None]:
    """This process's environment with no AWS setting but `values`, restored on exit (the demo's own
    scan reads moto through boto3's settings)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[key]
        os.environ.update(saved)


__all__ = [
    "ACCOUNT",
    "CLUSTER",
    "CLUSTER_LABEL",
    "CONTAINER",
    "CONTAINER_NAME_LABEL",
    "DEFAULT_ECS_DEMO_SCENARIOS",
    "ECS_POOL",
    "ECS_SCENARIOS",
    "ENGINE_COMMAND",
    "FLOW",
    "INSTALL_COMMAND",
    "REGION",
    "RUNNER_COMMAND",
    "STOP_TIMEOUT",
    "TASK_ARN_LABEL",
    "WORKER_STOP_REASON",
    "EcsDemoEnvironment",
    "EcsRecipe",
    "EcsScenario",
    "MotoEcs",
    "StuckTaskRun",
    "count_describe_tasks",
    "doctor_environ",
    "ecs_demo_environment",
    "moto_ecs_server",
    "register_definition",
    "require_moto",
    "select_ecs_scenarios",
]
