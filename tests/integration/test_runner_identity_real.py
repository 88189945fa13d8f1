"""A Runner is a Runner only if it is one: real processes under a real subreaper.

GIVEN a subreaper (PR_SET_CHILD_SUBREAPER, as `tini -s`, `systemd --user` and supervisord set)
whose child plays a Runner (it listens on a loopback port and starts an engine with that port in
PREFECT__CONTROL_PORT, as Prefect 3.9's Runner does), WHEN the Runner is SIGKILLed, THEN the
engine is adopted by the subreaper, the doctor does not take the subreaper for its Runner, and
the verdict names the subreaper as what adopted it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from prefect_cancel_doctor.engine import Options, inspect_pid
from prefect_cancel_doctor.locate.process import adopter_of, runner_of
from prefect_cancel_doctor.model import Cause
from prefect_cancel_doctor.sample import procfs

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
