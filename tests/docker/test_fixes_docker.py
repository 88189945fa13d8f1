"""Every "stop it now" line works on Docker: `docker kill`, `docker rm -f`, then the state.

GIVEN runs stuck for real in containers of a real prefect-docker worker (an
environment of this module's own: these tests end the runs), WHEN the commands
of a verdict's `stop_now` are run in bash exactly as printed, THEN the run
reaches a final state and its container is gone.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from prefect_cancel_doctor.clients.docker_api import DockerClient
from tests.helpers import carry_out, clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.docker_harness import DockerDemoEnvironment

pytestmark = [pytest.mark.server, pytest.mark.docker]

#: Scenario → the cause staged: the running containers' causes, and a container already gone.
STAGED = {
    "docker_signal_pending": "signal_pending",
    "docker_no_runner": "cancel_not_observed",
    "docker_shell_pid1": "pid1_no_forward",
    "docker_orphan": "orphaned_infrastructure",
    "docker_gone_killed": "infrastructure_gone",
}
FINAL = {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}


@pytest.fixture(scope="module")
def environment(docker_client: DockerClient) -> Iterator[DockerDemoEnvironment]:
    from prefect_cancel_doctor.demo.docker_harness import docker_demo_environment

    def progress(message: str) -> None:
        sys.__stderr__.write(f"[docker-fixes {time.strftime('%H:%M:%S')}] {message}\n")

    with docker_demo_environment(sorted(STAGED), log=progress, client=docker_client) as staged:
        yield staged


#: Ended by `resolve` instead (below): its `stop_now` has the same `docker kill` form as the others'.
RESOLVED = "docker_shell_pid1"


@pytest.mark.parametrize("scenario", sorted(set(STAGED) - {RESOLVED}))
def test_the_first_fix_ends_the_container_run(
    environment: DockerDemoEnvironment, docker_client: DockerClient, scenario: str, tmp_path: Path
) -> None:
    run = environment.run(scenario)
    env = clean_environ(PREFECT_API_URL=environment.api_url, PREFECT_HOME=str(tmp_path))
    diagnosed = run_cli("diagnose", run.run_id, "--format", "json", "--samples", "2", env=env, timeout=600)
    (entry,) = json.loads(diagnosed.stdout)["runs"]
    verdict = entry["verdict"]
    assert verdict["cause"] == STAGED[scenario], verdict["summary"]
    commands = verdict["stop_now"]
    assert commands, verdict["remediation"]
    if run.container_state == "running":
        assert commands[0].startswith(f"docker kill {run.container_id[:12]}"), commands
    carry_out(commands, env)
    harness = environment.harness
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and harness.state_type(run.run_id) not in FINAL:
        time.sleep(0.5)
    assert harness.state_type(run.run_id) in FINAL
    if run.container_state == "running":
        assert not [c for c in docker_client.containers() if c.id == run.container_id]
    if run.expected_state == "CANCELLING":
        assert harness.state_type(run.run_id) == "CANCELLED"
        message = harness.read_run(run.run_id).state.message or ""
        assert message.startswith("Cancelled by hand after prefect-cancel-doctor")


def test_resolve_signals_the_engine_past_a_shell_pid1_then_stops_the_container(
    environment: DockerDemoEnvironment, docker_client: DockerClient, tmp_path: Path
) -> None:
    run = environment.run(RESOLVED)
    env = clean_environ(
        PREFECT_API_URL=environment.api_url,
        PREFECT_HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    done = run_cli("resolve", run.run_id, "--yes", "--grace", "10", env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"SIGTERM the flow engine {run.engine_host_pid} (host PID)" in done.stdout  # the plan
    log = tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl"
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    assert actions[0]["signal"] == "SIGTERM" and str(run.engine_host_pid) in actions[0]["target"]
    assert actions[-1]["signal"] == "set Cancelled"
    assert not docker_client.inspect(run.container_id).running
    state = environment.harness.read_run(run.run_id).state
    assert state is not None and state.type.value == "CANCELLED"
    assert (state.message or "").startswith("Cancelled by prefect-cancel-doctor resolve")
