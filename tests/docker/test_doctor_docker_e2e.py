"""The doctor end to end on Docker: the CLI against runs stuck in real containers.

GIVEN real runs of a real prefect-docker worker stuck in containers (the
`stuck_containers` session fixture), WHEN `prefect-cancel-doctor scan --format
json` runs in each attach mode (host PIDs from here, or a sidecar container
sharing the target's PID namespace), THEN each run's verdict names its cause,
the kind of blocking call and the file:line inside the container.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from prefect_cancel_doctor.demo.docker_harness import DOCKER_SCENARIOS
from tests.helpers import assert_calibrated, clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.docker_harness import DockerDemoEnvironment, StuckContainerRun

pytestmark = [pytest.mark.server, pytest.mark.docker]


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=clean_environ(**env), timeout=600)


@pytest.fixture(scope="module", params=["host", "sidecar"])
def scan_in_mode(request: pytest.FixtureRequest, docker_environment: DockerDemoEnvironment) -> dict[str, Any]:
    result = doctor(
        "scan",
        "--format",
        "json",
        "--samples",
        "2",
        PREFECT_API_URL=docker_environment.api_url,
        PCD_DOCKER_ATTACH=request.param,
    )
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    return {"mode": request.param, "runs": {e["flow_run"]["id"]: e for e in document["runs"]}}


@pytest.mark.parametrize("scenario", sorted(DOCKER_SCENARIOS))
def test_scan_names_cause_kind_and_line_in_the_container(
    scenario: str, stuck_containers: dict[str, StuckContainerRun], scan_in_mode: dict[str, Any]
) -> None:
    run = stuck_containers[scenario]
    entry = scan_in_mode["runs"].get(run.run_id)
    assert entry is not None, f"{scenario}: run missing from the {scan_in_mode['mode']} scan"
    verdict = entry["verdict"]
    assert verdict["cause"] == run.expected_cause.value, verdict["summary"]
    assert entry["target"]["kind"] == "docker"
    call = verdict["blocking_call"]
    if run.expected_location is not None:
        assert call is not None, verdict["summary"]
        assert run.expected_kind is not None and call["kind"] == run.expected_kind.value
        assert (call["filename"], call["line"]) == tuple(run.expected_location), verdict["summary"]
    if run.container_state == "running":
        assert entry["target"]["container"]["attach"] == scan_in_mode["mode"]
    staged = DOCKER_SCENARIOS[scenario]
    if staged.expected_delivery is not None:
        delivery = verdict["delivery"]
        assert delivery["sigterm"] == staged.expected_delivery.value, delivery
        assert delivery["absorbed_by"] == (staged.expected_absorbed and staged.expected_absorbed.value), (
            delivery
        )
        # The engine is the container's PID 1: the engine's own `kill` event is a sign the SIGTERM came.
        assert any("Docker engine's event" in sign for sign in delivery["signs_for"]), delivery
        assert verdict["confidence"] >= 0.9, (verdict["confidence"], delivery)
    if scenario == "docker_except_loop":
        line = next(
            n
            for n, text in enumerate(run.file.read_text().splitlines(), 1)
            if text.strip().startswith("except BaseException")
        )
        assert f"{run.file.name}:{line}" in verdict["summary"], verdict["summary"]
    if scenario == "docker_cleanup_blocks":
        line = next(
            n for n, text in enumerate(run.file.read_text().splitlines(), 1) if text.strip() == "finally:"
        )
        assert "the `finally` at " in verdict["summary"], verdict["summary"]
        assert f"{run.file.name}:{line}," in verdict["summary"], verdict["summary"]


def test_shell_pid1_is_named_with_its_command(
    stuck_containers: dict[str, StuckContainerRun], scan_in_mode: dict[str, Any]
) -> None:
    verdict = scan_in_mode["runs"][stuck_containers["docker_shell_pid1"].run_id]["verdict"]
    assert any("PID 1 of container" in e and "no SIGTERM handler" in e for e in verdict["evidence"])
    assert any("exec" in fix and "tini" in fix for fix in verdict["remediation"])


def test_no_runner_evidence_is_the_container_command(
    stuck_containers: dict[str, StuckContainerRun], scan_in_mode: dict[str, Any]
) -> None:
    verdict = scan_in_mode["runs"][stuck_containers["docker_no_runner"].run_id]["verdict"]
    assert any("prefect.engine" in e and "no Prefect Runner" in e for e in verdict["evidence"])


def test_orphaned_container_reports_its_resources(
    stuck_containers: dict[str, StuckContainerRun], scan_in_mode: dict[str, Any]
) -> None:
    entry = scan_in_mode["runs"][stuck_containers["docker_orphan"].run_id]
    assert entry["flow_run"]["state_type"] == "CANCELLED"
    assert entry["target"]["container"]["stats"]["memory_bytes"] > 0
    assert any("MiB of memory" in e for e in entry["verdict"]["evidence"])


def test_inspect_a_container_by_name(stuck_containers: dict[str, StuckContainerRun]) -> None:
    run = stuck_containers["docker_signal_pending"]
    name = run.container_name or run.container_id
    result = doctor("inspect", "--container", name, "--format", "json", "--samples", "2")
    assert result.returncode == 1, result.stderr
    (entry,) = json.loads(result.stdout)["runs"]
    assert entry["verdict"]["cause"] == "signal_pending"
    assert entry["verdict"]["blocking_call"]["line"] == run.line


def test_unknown_container_is_a_usage_error() -> None:
    result = doctor("inspect", "--container", "no-such-container-pcd")
    assert result.returncode == 2
    assert "no-such-container-pcd" in result.stderr and "Traceback" not in result.stderr


def test_confidence_is_calibrated_on_the_staged_containers(
    stuck_containers: dict[str, StuckContainerRun], scan_in_mode: dict[str, Any]
) -> None:
    """Each band's verdicts are right at least as often as the band claims (README: Confidence)."""
    verdicts = [
        (entry["verdict"]["confidence"], entry["verdict"]["cause"] == run.expected_cause.value)
        for run in stuck_containers.values()
        if (entry := scan_in_mode["runs"].get(run.run_id)) is not None
    ]
    assert len(verdicts) == len(stuck_containers)
    assert_calibrated(verdicts, f"docker containers ({scan_in_mode['mode']})")
