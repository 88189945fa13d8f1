"""ECS fixtures: the ECS API from moto in server mode (`ThreadedMotoServer` on a local port, reached
through boto3's endpoint setting AWS_ENDPOINT_URL), a real local Prefect server, and staged runs whose
`infrastructure_pid` is prefect-aws's "<cluster>::<task ARN>" of a moto task. Both are made once a
session.

moto runs in this process, from the harness `demo --ecs` stages with (`demo/ecs_harness.py`; the
benchmark `bench/ecs_scan.py` uses it too): it reflects what ECS would record of a stop (stopCode,
stoppedReason, stoppingAt, each container's exit code and reason) into moto's task, as ECS's agent
would report it, and counts the DescribeTasks calls the doctor makes. Its task state machine is set
to manual progression (it would otherwise move a task on each read).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.demo.ecs_harness import (
    CLUSTER,
    FLOW,
    MotoEcs,
    moto_ecs_server,
    require_moto,
)
from prefect_cancel_doctor.errors import ConfigurationError
from tests.helpers import progress_to, unavailable

progress = progress_to("ecs")


@pytest.fixture(scope="session")
def moto_ecs() -> Iterator[MotoEcs]:
    try:
        require_moto()
    except ConfigurationError as exc:
        unavailable(f"the ECS tests need moto[server] (pip install -e '.[test]'): {exc}")
    with moto_ecs_server() as staged:
        yield staged


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
