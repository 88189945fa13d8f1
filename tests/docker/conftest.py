"""Docker fixtures: a real Docker engine, a real prefect-docker worker, real stuck containers.

`docker_environment` stages every scenario of `DOCKER_SCENARIOS` once per test
session (about 20-40 s on a 2-core machine: a local Prefect server, an image
`docker import`ed from a tiny root filesystem, a Docker work pool and a real
`prefect worker start --type docker`), and removes everything at the end:
containers, sidecars, image, worker, server.

`docker_client` (tests/conftest.py) is the session's client of the engine.
`stuck_containers` maps each scenario name to its `StuckContainerRun`: run id,
container id, `infrastructure_pid`, host PIDs of PID 1 and of the engine, the
expected cause / kind / state, the deployed file and its marked line.

Without a usable Docker engine these tests skip, except with CI=true, where
they fail.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.helpers import progress_to, unavailable

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.docker_api import DockerClient
    from prefect_cancel_doctor.demo.docker_harness import DockerDemoEnvironment, StuckContainerRun

_progress = progress_to("docker")


@pytest.fixture(scope="session")
def docker_environment(docker_client: DockerClient) -> Iterator[DockerDemoEnvironment]:
    """Every Docker scenario staged for real (server, Docker worker, stuck containers)."""
    missing = [name for name in ("prefect", "prefect_docker") if importlib.util.find_spec(name) is None]
    if missing:
        unavailable(f"the Docker harness needs {' and '.join(missing)} (pip install prefect-docker)")
    from prefect_cancel_doctor.demo.docker_harness import docker_demo_environment

    with docker_demo_environment(log=_progress, client=docker_client) as environment:
        _progress("timings (s): " + ", ".join(f"{k}={v}" for k, v in environment.timings.items()))
        yield environment
    # Nothing of the session may be left behind.
    from prefect_cancel_doctor.demo.docker_harness import OWNER_LABEL

    left = docker_client.containers(filters={"label": [f"{OWNER_LABEL}={environment.owner}"]})
    assert not left, f"containers left behind: {[c.id[:12] for c in left]}"


@pytest.fixture(scope="session")
def stuck_containers(docker_environment: DockerDemoEnvironment) -> dict[str, StuckContainerRun]:
    """Scenario name -> its staged run (for the doctor's end-to-end assertions)."""
    return {run.scenario: run for run in docker_environment.runs}


@pytest.fixture
def sleeper(
    docker_client: DockerClient, docker_environment: DockerDemoEnvironment
) -> Iterator[tuple[str, str]]:
    """A plain container from the session's imported image: PID 1 sleeps in Python.

    Yields (container id, the flow run id in its environment and labels).
    """
    from prefect_cancel_doctor.clients.docker_api import FLOW_RUN_LABEL
    from prefect_cancel_doctor.demo.docker_harness import OWNER_LABEL

    run_id = str(uuid.uuid4())
    container = docker_client.create(
        {
            "Image": docker_environment.image,
            "Cmd": [
                f"{sys.prefix}/bin/python",
                "-c",
                "import time; print('up', flush=True); time.sleep(600)",
            ],
            "Env": [f"PREFECT__FLOW_RUN_ID={run_id}"],
            "Labels": {OWNER_LABEL: docker_environment.owner, FLOW_RUN_LABEL: run_id},
            "StopSignal": "SIGINT",
            "StopTimeout": 7,
            "HostConfig": {"NetworkMode": "none", "Binds": docker_environment.mounts, "AutoRemove": False},
        },
        name=f"pcd-test-sleeper-{run_id[:8]}",
    )
    try:
        docker_client.start(container)
        deadline = time.monotonic() + 60
        while b"up" not in docker_client.logs(container)[0]:
            assert time.monotonic() < deadline, "the sleeper container did not start"
            time.sleep(0.1)
        yield container, run_id
    finally:
        docker_client.remove(container)
