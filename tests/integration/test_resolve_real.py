"""`resolve` and `scan --resolve-orphans` on real stuck runs: one test per escalation path.

GIVEN runs stuck for real on a local server (an environment of this module's own:
these tests end the runs), WHEN `resolve` runs as a user runs it, THEN the plan names
the run's processes, each step is carried out and logged, everything is gone, and
only then is the run marked Cancelled, with a message read back from the API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment, StuckRun

SCENARIOS = ["child", "gone", "sleep", "swallowed"]


@pytest.fixture(scope="module")
def environment() -> Iterator[DemoEnvironment]:
    from prefect_cancel_doctor.demo.environment import run_demo_environment

    def progress(message: str) -> None:
        sys.__stderr__.write(f"[resolve {time.strftime('%H:%M:%S')}] {message}\n")

    with run_demo_environment(SCENARIOS, progress) as staged:
        yield staged


def _env(environment: DemoEnvironment, tmp_path: Path) -> dict[str, str]:
    return clean_environ(
        PREFECT_API_URL=environment.harness.api_url,
        PREFECT_HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
    )


def _actions(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def _running(pid: int) -> bool:
    """Whether `pid` is alive (a zombie waiting for its parent to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pids(run: StuckRun, environment: DemoEnvironment) -> list[int]:
    return environment.harness.run_processes(run.run_id)


def test_no_terminal_and_no_yes_refuses_and_dry_run_changes_nothing(
    environment: DemoEnvironment, tmp_path: Path
) -> None:
    run = environment.run("sleep")
    env = _env(environment, tmp_path)
    before = (environment.harness.state_type(run.run_id), _pids(run, environment))
    refused = run_cli("resolve", run.run_id, env=env)  # stdin is not a terminal here
    assert refused.returncode == 2, refused.stderr
    assert "pass --yes" in refused.stderr
    dry = run_cli("resolve", run.run_id, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "SIGTERM" in dry.stderr and "matched by PREFECT__FLOW_RUN_ID" in dry.stderr
    assert "dry run: nothing was done" in dry.stderr
    assert (environment.harness.state_type(run.run_id), _pids(run, environment)) == before
    assert before[1], "the run's process should still be there"
    assert not (tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl").exists()


def test_ends_on_sigterm_then_marks_cancelled(environment: DemoEnvironment, tmp_path: Path) -> None:
    run = environment.run("sleep")
    pids = _pids(run, environment)
    done = run_cli("resolve", run.run_id, "--yes", env=_env(environment, tmp_path))
    assert done.returncode == 0, done.stderr
    assert _pids(run, environment) == []
    state = environment.harness.read_run(run.run_id).state
    assert state is not None and state.type.value == "CANCELLED"
    assert (state.message or "").startswith("Cancelled by prefect-cancel-doctor resolve: SIGTERM")
    actions = _actions(tmp_path)
    assert [a["signal"] for a in actions] == ["SIGTERM"] * len(pids) + ["set Cancelled"]
    assert {a["run"] for a in actions} == {run.run_id} and all(a["user"] and a["host"] for a in actions)


def test_needs_sigkill_after_the_grace(environment: DemoEnvironment, tmp_path: Path) -> None:
    run = environment.run("swallowed")  # its own SIGTERM handler returns: only SIGKILL ends it
    done = run_cli("resolve", run.run_id, "--yes", "--grace", "3", env=_env(environment, tmp_path))
    assert done.returncode == 0, done.stderr
    signals = [a["signal"] for a in _actions(tmp_path)]
    assert signals[0] == "SIGTERM" and "SIGKILL" in signals and signals[-1] == "set Cancelled"
    assert _pids(run, environment) == []
    assert environment.harness.state_type(run.run_id) == "CANCELLED"


def test_already_gone_only_sets_the_state(environment: DemoEnvironment, tmp_path: Path) -> None:
    run = environment.run("gone")
    done = run_cli("resolve", run.run_id, "--yes", env=_env(environment, tmp_path))
    assert done.returncode == 0, done.stderr
    assert [a["signal"] for a in _actions(tmp_path)] == ["set Cancelled"]
    message = environment.harness.read_run(run.run_id).state.message or ""
    assert message == "Cancelled by prefect-cancel-doctor resolve: nothing was left to stop"


def test_scan_resolve_orphans_ends_surviving_children(environment: DemoEnvironment, tmp_path: Path) -> None:
    run = environment.run("child")
    survivors = list(run.survivor_pids)
    assert survivors and all(_running(pid) for pid in survivors)
    done = run_cli("scan", "--format", "json", "--resolve-orphans", "--yes", env=_env(environment, tmp_path))
    assert done.returncode in (0, 1), done.stderr
    assert all(not _running(pid) for pid in survivors), done.stderr
    actions = _actions(tmp_path)
    assert {a["run"] for a in actions} == {run.run_id}
    assert "set Cancelled" not in [a["signal"] for a in actions]  # already final: left as it is
    assert environment.harness.state_type(run.run_id) == "CANCELLED"


def test_a_pid_reused_since_the_plan_is_refused_and_nothing_is_signalled(tmp_path: Path) -> None:
    from prefect_cancel_doctor.model import Cause, Role
    from prefect_cancel_doctor.resolve import ActionLog, Plan, ProcessTarget, Refused, execute
    from prefect_cancel_doctor.sample import procfs

    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        proc = procfs.read_process(sleeper.pid)
        assert proc is not None
        # The plan saw another process under this PID (another start time): a reuse.
        target = ProcessTarget(sleeper.pid, proc.start_time_ticks - 100, Role.ENGINE, "sleep 300", "test")
        plan = Plan("00000000-0000-0000-0000-000000000000", "reused", Cause.CANCEL_NOT_OBSERVED, (target,))
        with pytest.raises(Refused, match="PID reused"):
            execute(plan, api=None, log=ActionLog(tmp_path / "actions.jsonl"))  # type: ignore[arg-type]
        time.sleep(0.2)
        assert sleeper.poll() is None, "the reused PID was signalled"
        (entry,) = [json.loads(line) for line in (tmp_path / "actions.jsonl").read_text().splitlines()]
        assert entry["result"].startswith("refused")
    finally:
        sleeper.kill()
        sleeper.wait()
