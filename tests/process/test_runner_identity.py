"""A Runner is a Runner only if it is one: real processes under a real subreaper.

GIVEN a subreaper (PR_SET_CHILD_SUBREAPER, as `tini -s`, `systemd --user` and supervisord set)
whose child plays a Runner (it listens on a loopback port and starts an engine with that port in
PREFECT__CONTROL_PORT, as Prefect 3.9's Runner does), WHEN the Runner is SIGKILLed, THEN the
engine is adopted by the subreaper, the doctor does not take the subreaper for its Runner, and
the verdict names the subreaper as what adopted it.

The same on a real server with a real worker (issue 20): `prefect worker start --type process`
runs as the child of a subreaper, on the session's shared server (`demo_environment`); a run of
a flow that sleeps reaches its sleep, the worker alone is SIGKILLed, the run is cancelled, and
`prefect-cancel-doctor scan` says `cancel_not_observed`, with the subreaper named as what adopted
the flow process, never as a live Runner. (A subreaper whose own command line names the worker,
`tini -s -- prefect worker start ...`, is covered by tests/proc/test_inits_are_no_runners.py.)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from prefect_cancel_doctor.kinds.process.locate import adopter_of, runner_of
from prefect_cancel_doctor.model import Cause, heartbeat_due_seconds
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.scan.engine import Options, inspect_pid
from tests.helpers import clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = pytest.mark.server

ENGINE = "import time; print('ready', flush=True); time.sleep(600)"
RUNNER = f"""
import os, socket, subprocess, sys
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
env = dict(os.environ, PREFECT__CONTROL_PORT=str(server.getsockname()[1]))
argv = [sys.executable, "-c", {ENGINE!r}, "prefect.engine"]
engine = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
assert engine.stdout.readline().strip() == "ready"
print(engine.pid, flush=True)
engine.wait()
"""
SUBREAPER = f"""
import ctypes, subprocess, sys, time
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
runner = subprocess.Popen([sys.executable, "-c", {RUNNER!r}], stdout=subprocess.PIPE, text=True)
print(runner.pid, runner.stdout.readline().strip(), flush=True)
while True:
    time.sleep(1)
"""


@dataclass
class Tree:
    subreaper: subprocess.Popen[str]
    runner: int
    engine: int


@pytest.fixture
def tree() -> Iterator[Tree]:
    env = dict(os.environ, PREFECT__FLOW_RUN_ID=str(uuid.uuid4()))
    subreaper = subprocess.Popen(
        [sys.executable, "-c", SUBREAPER], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    assert subreaper.stdout is not None
    runner, engine = (int(word) for word in subreaper.stdout.readline().split())
    try:
        yield Tree(subreaper, runner, engine)
    finally:
        os.killpg(subreaper.pid, signal.SIGKILL)
        subreaper.wait()


def _adopted(engine: int, parent: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        snap = procfs.read_process(engine)
        if snap is not None and snap.ppid == parent:
            return True
        time.sleep(0.05)
    return False


def test_the_runner_is_its_parent_then_the_subreaper_is_not(tree: Tree) -> None:
    engine = procfs.read_process(tree.engine)
    assert engine is not None and engine.control_port is not None
    runner = runner_of(engine)
    assert runner is not None and runner.pid == tree.runner  # it listens on the engine's control port

    os.kill(tree.runner, signal.SIGKILL)
    assert _adopted(tree.engine, tree.subreaper.pid), "the subreaper did not adopt the engine"
    engine = procfs.read_process(tree.engine)
    assert engine is not None
    assert runner_of(engine) is None  # a Python parent, but no Runner: it does not listen on the port
    adopter = adopter_of(engine)
    assert adopter is not None and adopter.pid == tree.subreaper.pid

    verdict = inspect_pid(tree.engine, Options(samples=2, native=False)).runs[0].verdict
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED, verdict.summary
    assert not any("Runner that launched it is alive" in line for line in verdict.evidence), verdict.evidence
    assert any(
        f"process {tree.subreaper.pid}" in line and "subreaper" in line for line in verdict.evidence
    ), verdict.evidence


# -- the same on a real server, with a real worker --------------------------------------------

POOL = "pcd-subreaper"
HEARTBEAT_SECONDS = 5
FINAL = {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}
#: A flow that writes its PID and its parent's once it reaches its sleep.
FLOW = """
import os
import time
from pathlib import Path

from prefect import flow


@flow(name="adopted-sleep")
def adopted_sleep(ready_path: str) -> None:
    Path(ready_path + ".tmp").write_text(f"{os.getpid()} {os.getppid()}")
    os.replace(ready_path + ".tmp", ready_path)
    time.sleep(3600)  # blocks here
"""
#: A subreaper that starts the worker (its command line, `python subreaper.py`, names no worker as
#: its own), reaps what it adopts, and dies with the test (PR_SET_PDEATHSIG), the worker with it.
SUBREAPER_REAL = """\
import ctypes, json, os, signal, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0, "prctl(PR_SET_CHILD_SUBREAPER)"
spec = json.loads(os.environ.pop("PCD_TEST_WORKER"))
with open(spec["log"], "ab") as log:
    worker = subprocess.Popen(
        spec["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: libc.prctl(1, signal.SIGKILL, 0, 0, 0),
    )
print(worker.pid, flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


def _die_with_the_test() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class Adopted:
    """A run of a real worker under a subreaper: the worker SIGKILLed, the run cancelled."""

    api_url: str
    run_id: str
    subreaper: int
    worker: int
    flow: int


@pytest.fixture
def adopted(demo_environment: DemoEnvironment, tmp_path: Path) -> Iterator[Adopted]:
    from prefect_cancel_doctor.demo.harness import prefect_command
    from prefect_cancel_doctor.kinds.process.locate import launch_traces

    harness = demo_environment.harness
    work = tmp_path / "flow"
    work.mkdir()
    (work / "adopted_flow.py").write_text(FLOW)
    (tmp_path / "subreaper.py").write_text(SUBREAPER_REAL)
    ready = tmp_path / "ready"
    harness.create_process_pool(POOL)
    deployment = harness.deploy(
        flow_name="adopted-sleep", entrypoint="adopted_flow.py:adopted_sleep", directory=work, pool=POOL
    )
    name = f"subreaper-{uuid.uuid4().hex[:8]}"
    log = harness.logs_dir / f"worker-{name}.log"
    argv = [*prefect_command(), "worker", "start", "--pool", POOL, "--type", "process", "--name", name]
    env = harness.child_env(
        {
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",
            "PYTHONUNBUFFERED": "1",
            "PCD_TEST_WORKER": json.dumps({"argv": argv, "log": str(log)}),
        }
    )
    run_id = harness.create_run(deployment, {"ready_path": str(ready)})
    subreaper = subprocess.Popen(
        [sys.executable, str(tmp_path / "subreaper.py")],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=work,
        start_new_session=True,
        preexec_fn=_die_with_the_test,
    )
    worker = 0
    try:
        assert subreaper.stdout is not None
        line = subreaper.stdout.readline()
        assert line.strip().isdigit(), f"the subreaper did not start the worker (exit {subreaper.poll()})"
        worker = int(line)

        def sleeping_or_over() -> bool:
            return ready.exists() or subreaper.poll() is not None or harness.state_type(run_id) in FINAL

        harness.wait_until(
            sleeping_or_over,
            240,
            lambda: f"the run to reach its sleep; worker log:\n{log.read_text(errors='replace')[-3000:]}",
            interval=0.5,
        )
        assert ready.exists(), (harness.state_type(run_id), log.read_text(errors="replace")[-3000:])
        flow, parent = (int(word) for word in ready.read_text().split())
        assert parent == worker, f"the flow process {flow} is not the worker's child (parent {parent})"
        snap = procfs.read_process(flow)
        assert snap is not None
        runner = runner_of(snap)
        assert runner is not None and runner.pid == worker  # the live worker is the flow's Runner

        os.kill(worker, signal.SIGKILL)  # the worker alone, as a crash or the OOM killer would
        assert _adopted(flow, subreaper.pid), "the subreaper did not adopt the flow process"
        _wait_past_last_heartbeat(demo_environment, name)
        harness.cancel_run(run_id)
        harness.wait_for_state(run_id, ["CANCELLING"], timeout=30)
        yield Adopted(harness.api_url, run_id, subreaper.pid, worker, flow)
    finally:
        with contextlib.suppress(Exception):
            harness.kill_run_processes(run_id)
        for pid in (worker, subreaper.pid):
            with contextlib.suppress(OSError):
                if pid:
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.killpg(subreaper.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            subreaper.wait(15)
        if subreaper.stdout is not None:
            subreaper.stdout.close()
        with contextlib.suppress(Exception):
            harness.kill_run_processes(run_id)
        with contextlib.suppress(Exception):
            if harness.state_type(run_id) not in FINAL:
                harness.force_state(run_id, "CANCELLED", "ended by test_runner_identity_real")
        config = launch_traces().get(run_id)
        if config:
            shutil.rmtree(Path(config).parent, ignore_errors=True)


def _wait_past_last_heartbeat(environment: DemoEnvironment, worker: str) -> None:
    """Until the dead worker's next heartbeat is overdue (Prefect jitters it: `heartbeat_due_seconds`):
    the worker died before the cancel, and its heartbeat reads stale at the scan."""
    harness = environment.harness
    overdue = heartbeat_due_seconds(HEARTBEAT_SECONDS) + 1

    def past() -> bool:
        known = [w for w in harness.workers_of_pool(POOL) if w.name == worker]
        last = known[0].last_heartbeat_time if known else None
        assert last is not None, f"worker {worker} never heartbeated"
        return time.time() > last.timestamp() + overdue

    harness.wait_until(past, overdue + 15, "the dead worker's next heartbeat to be overdue")


def test_a_flow_adopted_by_a_subreaper_after_its_worker_was_killed(adopted: Adopted, tmp_path: Path) -> None:
    env = clean_environ(PREFECT_API_URL=adopted.api_url, PREFECT_HOME=str(tmp_path / "home"))
    done = run_cli("scan", "--format", "json", "--samples", "2", env=env)
    assert done.returncode == 1, done.stderr[-3000:]
    entries = [
        e for e in json.loads(done.stdout)["runs"] if (e["flow_run"] or {}).get("id") == adopted.run_id
    ]
    assert len(entries) == 1, f"run {adopted.run_id} missing from the scan: {done.stderr[-2000:]}"
    entry = entries[0]
    verdict = entry["verdict"]
    print(
        f"\nsummary ({verdict['confidence']}): {verdict['summary']}\n"
        + "\n".join(f"  - {line}" for line in verdict["evidence"])
    )

    assert verdict["cause"] == "cancel_not_observed", verdict["summary"]
    flow = procfs.read_process(adopted.flow)
    assert flow is not None and flow.ppid == adopted.subreaper  # adopted: its parent is the subreaper
    assert not procfs.read_process(adopted.worker)
    engine = [p["pid"] for p in entry["target"]["processes"] if p["role"] == "engine"]
    assert engine == [adopted.flow], entry["target"]["processes"]
    evidence = verdict["evidence"]
    assert not any("Runner that launched it is alive" in line for line in evidence), evidence
    adopter = [line for line in evidence if f"process {adopted.subreaper} " in line and "subreaper" in line]
    assert adopter, evidence
    assert "the Runner that launched the flow process is gone" in adopter[0]
