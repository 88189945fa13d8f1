"""Every "stop it now" line works: carried out, for real, on each staged cause.

GIVEN runs stuck for real (an environment of this module's own: these tests
end the runs), WHEN the commands of a verdict's `stop_now` are run in a shell,
exactly as printed, THEN the run reaches a final state and none of its
processes is left.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import carry_out, clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = pytest.mark.server

#: Scenario → the cause staged (what the test carries out the fix of).
STAGED = {
    "sleep": "cancel_not_observed",
    "database_worker_dead": "cancel_not_observed",
    "database": "signal_pending",
    "ignored": "signal_ignored",
    "thread": "exit_blocked_by_thread",
    "gone": "infrastructure_gone",
    "never_started": "never_started",
    "orphan": "orphaned_infrastructure",
    "child": "child_process_survives",
}
FINAL = {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}


@pytest.fixture(scope="module")
def environment() -> Iterator[DemoEnvironment]:
    from prefect_cancel_doctor.demo.environment import run_demo_environment

    def progress(message: str) -> None:
        sys.__stderr__.write(f"[fixes {time.strftime('%H:%M:%S')}] {message}\n")

    with run_demo_environment(sorted(STAGED), progress) as staged:
        yield staged


@pytest.mark.parametrize("scenario", sorted(STAGED))
def test_the_first_fix_ends_the_run(environment: DemoEnvironment, scenario: str, tmp_path: Path) -> None:
    run = environment.run(scenario)
    env = clean_environ(PREFECT_API_URL=run.api_url, PREFECT_HOME=str(tmp_path))
    diagnosed = run_cli("diagnose", run.run_id, "--format", "json", "--samples", "2", env=env)
    (entry,) = json.loads(diagnosed.stdout)["runs"]
    verdict = entry["verdict"]
    assert verdict["cause"] == STAGED[scenario], verdict["summary"]
    commands = verdict["stop_now"]
    assert commands, verdict["remediation"]
    # The first fix is the doctor's own `resolve` (tests/act/test_resolve.py carries it out); the
    # next is the same by hand, carried out here.
    assert (
        verdict["remediation"][0]
        == f"end it now, safely: `prefect-cancel-doctor resolve {entry['flow_run']['name']}`"
    )
    assert verdict["remediation"][1].startswith("or by hand, in order: `" + commands[0])
    carry_out(commands, env)
    harness = environment.harness
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = harness.state_type(run.run_id)
        if state in FINAL and not harness.run_processes(run.run_id):
            break
        time.sleep(0.5)
    assert harness.state_type(run.run_id) in FINAL
    assert harness.run_processes(run.run_id) == []
    if run.expected_state == "CANCELLING":
        assert harness.state_type(run.run_id) == "CANCELLED"
        message = harness.read_run(run.run_id).state.message or ""
        assert message.startswith("Cancelled by hand after prefect-cancel-doctor")
