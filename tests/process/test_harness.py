"""The stuck-run harness leaves exactly the real state each scenario promises.

Every assertion reads the truth from the Prefect API (plain HTTP, not the
harness's client) or from /proc, never from what the harness says it did.
The catalog tests at the top need neither Prefect nor a server.
"""

from __future__ import annotations

import ast
import datetime
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_cancel_doctor.demo.catalog import (
    BLOCK_MARKER,
    DEFAULT_DEMO_SCENARIOS,
    SCENARIOS,
    Recipe,
    Scenario,
    marker_line,
    select,
)
from prefect_cancel_doctor.demo.environment import DemoEnvironment, StuckRun
from prefect_cancel_doctor.model import Cause

pytestmark = [pytest.mark.server, pytest.mark.e2e, pytest.mark.timeout(900)]

SIGTERM_MASK = 1 << (signal.SIGTERM - 1)
ALL = sorted(SCENARIOS)
WITH_PROCESS = sorted(name for name, s in SCENARIOS.items() if s.process_alive)
WITHOUT_PROCESS = sorted(name for name, s in SCENARIOS.items() if not s.process_alive)


# -- the catalog (no server) -------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_catalog_program_has_one_marked_line_in_its_flow(name: str) -> None:
    # GIVEN a scenario's flow program
    scenario = SCENARIOS[name]
    source = scenario.path.read_text()
    tree = ast.parse(source)

    # THEN it marks exactly one line, defines the flow function and names the flow as the catalog says
    assert sum(line.rstrip().endswith(BLOCK_MARKER) for line in source.splitlines()) == 1
    functions = {
        node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    assert scenario.flow_function in functions
    assert f'@flow(name="{scenario.flow_name}"' in source
    assert "ready_path: str" in source
    # a handshake (the ready file, or the hook's own) is written before the blocking line
    ready_lines = [n for n, line in enumerate(source.splitlines(), 1) if ".write_text(" in line]
    assert ready_lines and min(ready_lines) < scenario.blocking_line


def test_catalog_covers_the_requested_causes() -> None:
    # GIVEN the catalog, THEN each scenario predicts the cause the doctor should report
    expected = {
        "sleep": Cause.CANCEL_NOT_OBSERVED,
        "network": Cause.CANCEL_NOT_OBSERVED,
        "subprocess": Cause.CANCEL_NOT_OBSERVED,
        "lock": Cause.CANCEL_NOT_OBSERVED,
        "database": Cause.SIGNAL_PENDING,
        "database_worker_dead": Cause.CANCEL_NOT_OBSERVED,
        "fifo": Cause.CANCEL_NOT_OBSERVED,
        "pipe": Cause.CANCEL_NOT_OBSERVED,
        "cpu": Cause.SIGNAL_PENDING,
        "ignored": Cause.SIGNAL_IGNORED,
        "swallowed": Cause.SIGNAL_IGNORED,
        "handler_logs": Cause.SIGNAL_IGNORED,
        "except_loop": Cause.SIGNAL_IGNORED,
        "bare_except": Cause.SIGNAL_IGNORED,
        "gil_held": Cause.SIGNAL_PENDING,
        "thread": Cause.EXIT_BLOCKED_BY_THREAD,
        "thread_worker_dead": Cause.CANCEL_NOT_OBSERVED,
        "to_thread": Cause.CANCEL_NOT_OBSERVED,
        "to_thread_signalled": Cause.EXIT_BLOCKED_BY_THREAD,
        "async_loop": Cause.EVENT_LOOP_BLOCKED,
        "child": Cause.CHILD_PROCESS_SURVIVES,
        "gone": Cause.INFRASTRUCTURE_GONE,
        "orphan": Cause.ORPHANED_INFRASTRUCTURE,
        "never_started": Cause.NEVER_STARTED,
        "observer_dead": Cause.CANCEL_NOT_OBSERVED,
        "hook": Cause.CANCELLATION_HOOK_HANG,
    }
    assert {name: s.expected_cause for name, s in SCENARIOS.items()} == expected
    assert set(DEFAULT_DEMO_SCENARIOS) <= set(SCENARIOS)
    assert [s.name for s in select(["orphan", "sleep"])] == ["sleep", "orphan"]
    with pytest.raises(KeyError, match="nope"):
        select(["nope"])


def test_marker_line_is_read_not_hard_coded(tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text(f"a = 1\nb = 2  {BLOCK_MARKER}\n")
    assert marker_line(program) == 2
    program.write_text("a = 1\n")
    with pytest.raises(ValueError, match="no line"):
        marker_line(program)


# -- the staged runs (real server, real processes) ----------------------------


def api_get(run: StuckRun, path: str) -> Any:
    response = httpx.get(f"{run.api_url}{path}", timeout=10)
    response.raise_for_status()
    return response.json()


def api_run(run: StuckRun) -> dict[str, Any]:
    data: dict[str, Any] = api_get(run, f"/flow_runs/{run.run_id}")
    return data


def proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def proc_alive(pid: int) -> bool:
    try:
        return proc_status(pid)["State"][0] != "Z"
    except OSError:
        return False


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def pids_of_run(run_id: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if proc_environ(int(entry)).get("PREFECT__FLOW_RUN_ID") == run_id and proc_alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("name", ALL)
def test_run_is_left_in_its_expected_state(stuck_runs: dict[str, StuckRun], name: str) -> None:
    # GIVEN a staged scenario
    run = stuck_runs[name]

    # WHEN the API is asked for the run
    data = api_run(run)

    # THEN its state is the one the scenario promises (it did not finish on its own)
    assert data["state"]["type"] == SCENARIOS[name].expected_state
    assert run.expected_state == SCENARIOS[name].expected_state
    assert data["work_pool_name"] == run.pool_name


@pytest.mark.parametrize("name", WITH_PROCESS)
def test_flow_process_still_runs_and_carries_the_run_id(stuck_runs: dict[str, StuckRun], name: str) -> None:
    run = stuck_runs[name]
    assert run.flow_pid is not None
    # THEN the API's infrastructure_pid is that process, which is alive and tagged with the run id
    assert api_run(run)["infrastructure_pid"] == str(run.flow_pid)
    assert proc_alive(run.flow_pid)
    assert proc_environ(run.flow_pid)["PREFECT__FLOW_RUN_ID"] == run.run_id
    assert "prefect.engine" in Path(f"/proc/{run.flow_pid}/cmdline").read_text()


@pytest.mark.parametrize("name", WITHOUT_PROCESS)
def test_runs_without_flow_process_have_none(stuck_runs: dict[str, StuckRun], name: str) -> None:
    run = stuck_runs[name]
    assert run.flow_pid is None or not proc_alive(run.flow_pid)
    survivors = set(run.survivor_pids)
    assert {pid for pid in pids_of_run(run.run_id) if pid not in survivors} == set()


@pytest.mark.parametrize("name", sorted(n for n, s in SCENARIOS.items() if s.expected_kind is not None))
def test_expected_location_is_the_marked_line_of_the_deployed_copy(
    stuck_runs: dict[str, StuckRun], name: str
) -> None:
    run = stuck_runs[name]
    assert run.file.read_text() == run.source_file.read_text()
    assert run.line == marker_line(run.file)
    if name == "child":
        assert run.expected_location == ("<string>", 1)
    else:
        assert run.expected_location == (str(run.file), run.line)
        assert "site-packages" not in str(run.file)


def test_signal_resistant_runs_really_received_sigterm(demo_environment: DemoEnvironment) -> None:
    # GIVEN the runs staged by letting the worker SIGTERM them, then crashing the worker
    worker = demo_environment.workers["pcd-demo-worker"]
    resistant = [
        r for r in demo_environment.runs if SCENARIOS[r.scenario].recipe is Recipe.WORKER_KILLED_AFTER_SIGTERM
    ]
    assert resistant
    sent = worker.signals_sent()
    for run in resistant:
        assert run.flow_pid is not None
        # THEN the worker signalled each run's process group with SIGTERM, never with SIGKILL
        assert any(s.target == run.flow_pid and s.signal == signal.SIGTERM for s in sent), run.scenario
    assert not any(s.signal == signal.SIGKILL for s in sent)
    # AND the worker is dead, while the processes it signalled still run
    assert not proc_alive(worker.pid)
    assert all(run.flow_pid is not None and proc_alive(run.flow_pid) for run in resistant)


def test_worker_dead_before_cancel_runs_got_no_signal(demo_environment: DemoEnvironment) -> None:
    worker = demo_environment.workers["pcd-demo-worker"]
    targets = {s.target for s in worker.signals_sent()}
    dead_before = [
        run
        for run in demo_environment.runs
        if SCENARIOS[run.scenario].recipe is Recipe.WORKER_DEAD_BEFORE_CANCEL
    ]
    assert dead_before, "no staged scenario uses WORKER_DEAD_BEFORE_CANCEL: nothing was checked"
    for run in dead_before:
        assert run.flow_pid is not None and run.flow_pid not in targets, run.scenario


def test_ignored_run_has_sigterm_ignored_in_the_kernel(stuck_runs: dict[str, StuckRun]) -> None:
    run = stuck_runs["ignored"]
    assert run.flow_pid is not None
    status = proc_status(run.flow_pid)
    assert int(status["SigIgn"], 16) & SIGTERM_MASK
    assert not int(status["SigCgt"], 16) & SIGTERM_MASK


@pytest.mark.parametrize("name", ["database", "cpu"])
def test_pending_runs_show_no_kernel_pending_bit(stuck_runs: dict[str, StuckRun], name: str) -> None:
    # The C-level handler already ran: Python's handler is what is pending, not the kernel's signal.
    run = stuck_runs[name]
    assert run.flow_pid is not None
    status = proc_status(run.flow_pid)
    assert int(status["SigPnd"], 16) == 0 and int(status["ShdPnd"], 16) == 0
    assert int(status["SigCgt"], 16) & SIGTERM_MASK


def test_thread_run_keeps_a_second_thread(stuck_runs: dict[str, StuckRun]) -> None:
    run = stuck_runs["thread"]
    assert run.flow_pid is not None
    assert len(os.listdir(f"/proc/{run.flow_pid}/task")) >= 2


def test_child_survives_its_cancelled_run(stuck_runs: dict[str, StuckRun]) -> None:
    # GIVEN the `child` run, cancelled while its worker was alive
    run = stuck_runs["child"]
    data = api_run(run)
    assert data["state"]["type"] == "CANCELLED"

    # THEN the flow process is gone but the child it started in its own session runs on
    assert run.flow_pid is not None and not proc_alive(run.flow_pid)
    assert len(run.survivor_pids) == 1
    survivor = run.survivor_pids[0]
    assert proc_alive(survivor)
    assert proc_environ(survivor)["PREFECT__FLOW_RUN_ID"] == run.run_id
    assert os.getsid(survivor) == survivor != run.flow_pid
    cmdline = Path(f"/proc/{survivor}/cmdline").read_bytes().split(b"\0")
    assert b"import time; time.sleep(3600)" in cmdline


def test_orphan_is_cancelled_with_the_timeout_message_while_its_process_runs(
    stuck_runs: dict[str, StuckRun],
) -> None:
    run = stuck_runs["orphan"]
    state = api_run(run)["state"]
    assert state["type"] == "CANCELLED"
    assert state["message"] == "Flow run cancellation timed out; marked this flow run as Cancelled."
    assert run.flow_pid is not None and proc_alive(run.flow_pid)


def test_gone_run_is_cancelling_without_any_process(stuck_runs: dict[str, StuckRun]) -> None:
    run = stuck_runs["gone"]
    data = api_run(run)
    assert data["state"]["type"] == "CANCELLING"
    assert data["start_time"] is not None and data["infrastructure_pid"] == str(run.flow_pid)
    assert pids_of_run(run.run_id) == []


def test_never_started_run_was_claimed_then_cancelled(stuck_runs: dict[str, StuckRun]) -> None:
    run = stuck_runs["never_started"]
    data = api_run(run)
    assert data["state"]["type"] == "CANCELLING"
    assert data["start_time"] is None
    assert data["infrastructure_pid"] is None
    history = api_get(run, f"/flow_run_states/?flow_run_id={run.run_id}")
    assert [(state["type"], state["name"]) for state in history] == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Pending"),
        ("PENDING", "Submitting"),
        ("CANCELLING", "Cancelling"),
    ]
    assert data["labels"]["prefect.worker.name"] == run.worker_name == "pcd-demo-worker"
    assert run.worker_pid is None
    assert pids_of_run(run.run_id) == []


@pytest.mark.parametrize("name", sorted(n for n, s in SCENARIOS.items() if s.expected_state == "CANCELLING"))
def test_cancelling_runs_entered_cancelling_once_and_stay(stuck_runs: dict[str, StuckRun], name: str) -> None:
    run = stuck_runs[name]
    history = api_get(run, f"/flow_run_states/?flow_run_id={run.run_id}")
    types = [state["type"] for state in history]
    assert types.count("CANCELLING") == 1 and types[-1] == "CANCELLING"
    assert "CANCELLED" not in types and "CRASHED" not in types


def test_observer_dead_worker_is_online_with_the_failure_in_its_log(
    demo_environment: DemoEnvironment,
) -> None:
    # GIVEN the run whose worker lost its cancellation observer during a server outage
    run = demo_environment.run("observer_dead")
    worker = demo_environment.workers["pcd-demo-observer-worker"]
    assert run.worker_name == worker.name and run.worker_pid == worker.pid

    # THEN the worker process runs, the API shows it ONLINE with a recent heartbeat ...
    assert proc_alive(worker.pid)
    response = httpx.post(f"{run.api_url}/work_pools/{run.pool_name}/workers/filter", json={}, timeout=10)
    response.raise_for_status()
    (known,) = [w for w in response.json() if w["name"] == worker.name]
    assert known["status"] == "ONLINE"
    heartbeat = datetime.datetime.fromisoformat(known["last_heartbeat_time"].replace("Z", "+00:00"))
    assert datetime.datetime.now(datetime.timezone.utc) - heartbeat < datetime.timedelta(seconds=60)

    # ... its log says the observer gave up, and it never signalled the run
    log = worker.log_text()
    assert "Cancellation observer failed. Flow run cancellation disabled." in log
    assert run.flow_pid is not None and proc_alive(run.flow_pid)
    assert all(s.target != run.flow_pid for s in worker.signals_sent())
    assert api_run(run)["state"]["type"] == "CANCELLING"


def test_main_worker_is_dead_and_offline(demo_environment: DemoEnvironment) -> None:
    # GIVEN the worker that was SIGKILLed ("crashed")
    worker = demo_environment.workers["pcd-demo-worker"]
    run = demo_environment.run("sleep")

    # THEN its process is gone and the API reports it OFFLINE
    assert not worker.alive()
    assert not proc_alive(worker.pid)
    response = httpx.post(f"{run.api_url}/work_pools/{run.pool_name}/workers/filter", json={}, timeout=10)
    response.raise_for_status()
    (known,) = [w for w in response.json() if w["name"] == worker.name]
    assert known["status"] == "OFFLINE"


def test_fixture_data_is_complete(stuck_runs: dict[str, StuckRun]) -> None:
    assert set(stuck_runs) == set(SCENARIOS)
    for name, run in stuck_runs.items():
        scenario: Scenario = SCENARIOS[name]
        assert run.expected_cause is scenario.expected_cause
        assert run.expected_kind is scenario.expected_kind
        assert run.api_url.startswith("http://127.0.0.1:") and run.api_url.endswith("/api")
        assert run.as_dict()["run_id"] == run.run_id
        assert run.worker_name
        if scenario.recipe is not Recipe.PENDING_THEN_CANCEL:
            assert run.worker_pid and run.flow_pid


@pytest.mark.real
def test_staged_processes_print_no_telemetry_notice(tmp_path: Path) -> None:
    """Prefect prints a first-run telemetry notice on `import prefect` in a terminal for a new
    PREFECT_HOME, which every demo's is: the staged processes' environment opts out."""
    import pty
    import subprocess
    import sys

    from prefect_cancel_doctor.demo.harness import LocalPrefect
    from tests.helpers import read_terminal

    ci_vars = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "CI_NAME")

    def imported_in_a_terminal(env: dict[str, str]) -> str:
        env = {k: v for k, v in env.items() if k not in ci_vars}
        primary, secondary = pty.openpty()
        with subprocess.Popen(
            [sys.executable, "-c", "import prefect"], env=env, stdout=secondary, stderr=secondary
        ) as child:
            os.close(secondary)
            out = read_terminal(primary, child, None, timeout=60)
            child.wait(timeout=60)
        os.close(primary)
        return out

    staged = LocalPrefect(workdir=tmp_path / "staged").child_env()
    bare = {**staged, "PREFECT_HOME": str(tmp_path / "bare")}
    bare.pop("DO_NOT_TRACK")
    assert "anonymous usage data" in imported_in_a_terminal(bare)  # what the opt-out prevents
    assert "anonymous usage data" not in imported_in_a_terminal(staged)
