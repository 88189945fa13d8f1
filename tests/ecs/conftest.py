"""ECS fixtures: the ECS API from moto in server mode (`ThreadedMotoServer` on a local port, reached
through boto3's endpoint setting AWS_ENDPOINT_URL), a real local Prefect server, and staged runs whose
`infrastructure_pid` is prefect-aws's "<cluster>::<task ARN>" of a moto task. Both are made once a
session (`bench/ecs_scan.py` reuses `MotoEcs` and the DescribeTasks counter).

moto runs in this process: the harness reflects what ECS would record of a stop (stopCode,
stoppedReason, stoppingAt, each container's exit code and reason) into moto's task, as ECS's agent
would report it, and counts the DescribeTasks calls the doctor makes. Its task state machine is set
to manual progression (it would otherwise move a task on each read).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import clean_environ, progress_to, unavailable

progress = progress_to("ecs")

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLUSTER = "prefect-prod"
FLOW = """from prefect import flow


@flow
def etl() -> None:
    pass
"""


@dataclasses.dataclass
class MotoEcs:
    """moto's ECS, EC2 and IAM on a local port, with the cluster and task definition the runs use."""

    endpoint: str
    task_definition: str
    #: An EC2 instance registered as a container instance of the cluster (another host than this one).
    ec2_instance_id: str
    #: DescribeTasks calls the server answered, by cluster.
    describe_calls: list[str]

    def client(self, service: str = "ecs") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def backend_task(self, arn: str) -> Any:
        from moto.ecs.models import ecs_backends

        return ecs_backends[ACCOUNT][REGION].tasks[CLUSTER][arn]

    def run_task(self, run_id: str, *, launch_type: str = "FARGATE", execute: bool = False) -> str:
        """A task as prefect-aws's worker starts it (its container override carries the run's id and
        command, its tags the run's labels); returns its ARN."""
        answer = self.client().run_task(
            cluster=CLUSTER,
            taskDefinition=self.task_definition,
            launchType=launch_type,
            enableExecuteCommand=execute,
            overrides={
                "containerOverrides": [
                    {
                        "name": "prefect",
                        "command": ["prefect", "flow-run", "execute"],
                        "environment": [{"name": "PREFECT__FLOW_RUN_ID", "value": run_id}],
                    }
                ]
            },
            tags=[{"key": "prefect.io/flow-run-id", "value": run_id}],
        )
        arn = str(answer["tasks"][0]["taskArn"])
        task = self.backend_task(arn)
        task.enable_execute_command = execute  # moto does not keep it
        task.started_at = datetime.now(timezone.utc) - timedelta(minutes=20)
        return arn

    def stop_task(self, arn: str, *, code: str, reason: str, exit_code: int | None, why: str | None) -> None:
        """What ECS records of a stop, as its agent reports it."""
        task = self.backend_task(arn)
        now = datetime.now(timezone.utc)
        task.last_status, task.desired_status = "STOPPED", "STOPPED"
        task.stop_code, task.stopped_reason = code, reason
        task.stopping_at, task.stopped_at = now - timedelta(minutes=5), now - timedelta(minutes=5)
        for container in task.containers:
            container.last_status = "STOPPED"
            container.exit_code = container.exitCode = exit_code
            container.reason = why

    def stopping(self, arn: str, *, minutes_ago: float) -> None:
        """StopTask asked, the task still RUNNING."""
        task = self.backend_task(arn)
        task.desired_status = "STOPPED"
        task.stopping_at = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
        task.stop_code, task.stopped_reason = "UserInitiated", "Stopped by Prefect worker"
        for container in task.containers:
            container.last_status = "RUNNING"

    def env(self, **extra: str) -> dict[str, str]:
        """The doctor's environment: boto3's own settings pointing at moto, no other AWS or Docker."""
        env = {k: v for k, v in clean_environ().items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_REGION=REGION,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_CONFIG_FILE="/nonexistent/aws-config",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
            AWS_EC2_METADATA_DISABLED="true",
            DOCKER_HOST="unix:///nonexistent/docker.sock",
        )
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def moto_ecs() -> Iterator[MotoEcs]:
    try:
        from moto.core.common_models import BaseModel  # noqa: F401
        from moto.moto_api import state_manager
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        unavailable(f"the ECS tests need moto[server] (pip install -e '.[test]'): {exc}")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        describe_calls: list[str] = []
        staged = MotoEcs(endpoint, "", "", describe_calls)
        ecs, ec2 = staged.client(), staged.client("ec2")
        ecs.create_cluster(clusterName=CLUSTER)
        definition = ecs.register_task_definition(
            family="prefect",
            containerDefinitions=[
                {
                    "name": "prefect",
                    "image": "prefecthq/prefect:3-latest",
                    "memory": 512,
                    "cpu": 256,
                    "essential": True,
                    "command": ["prefect", "flow-run", "execute"],
                    "stopTimeout": 45,
                }
            ],
        )["taskDefinition"]
        image = ec2.describe_images()["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        document = json.dumps({"instanceId": instance, "region": REGION, "accountId": ACCOUNT})
        ecs.register_container_instance(cluster=CLUSTER, instanceIdentityDocument=document)
        staged.task_definition = definition["taskDefinitionArn"]
        staged.ec2_instance_id = instance
        _count_describe_tasks(describe_calls)
        yield staged
    finally:
        state_manager.unset_transition("ecs::task")
        server.stop()


def _count_describe_tasks(calls: list[str]) -> None:
    from moto.ecs.models import ecs_backends

    backend = ecs_backends[ACCOUNT][REGION]
    original: Callable[..., Any] = backend.describe_tasks

    def counting(cluster_str: str, tasks: Any) -> Any:
        calls.append(cluster_str)
        return original(cluster_str, tasks)

    backend.describe_tasks = counting  # type: ignore[method-assign]


@dataclasses.dataclass
class EcsPrefect:
    """A real local Prefect server with a deployment on an ECS work pool."""

    prefect: Any
    deployment_id: str

    @property
    def api_url(self) -> str:
        return str(self.prefect.api_url)

    def cancelling_run(self, moto: MotoEcs, **task: Any) -> tuple[str, str]:
        """A started run whose infrastructure_pid is its moto task's, then cancelled: (run id, task ARN)."""
        run_id = self.prefect.create_run(self.deployment_id, {})
        arn = moto.run_task(run_id, **task)
        self.prefect.force_state(run_id, "PENDING")
        self.prefect.force_state(run_id, "RUNNING")
        self.prefect.client.update_flow_run(uuid.UUID(run_id), infrastructure_pid=f"{CLUSTER}::{arn}")
        assert self.prefect.cancel_run(run_id) == "CANCELLING"
        return run_id, arn


@pytest.fixture(scope="session")
def ecs_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EcsPrefect]:
    from prefect.client.schemas.actions import WorkPoolCreate

    from prefect_cancel_doctor.demo.harness import LocalPrefect

    directory = tmp_path_factory.mktemp("ecs-flow")
    Path(directory, "flow.py").write_text(FLOW)
    with LocalPrefect(log=progress) as prefect:
        prefect.client.create_work_pool(WorkPoolCreate(name="ecs", type="ecs", base_job_template={}))
        deployment = prefect.deploy(
            flow_name="etl", entrypoint="flow.py:etl", directory=directory, pool="ecs"
        )
        yield EcsPrefect(prefect, deployment)
