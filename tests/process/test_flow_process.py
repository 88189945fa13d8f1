"""`inspect --pid`: what counts as a Prefect flow (real processes, read from this host's /proc)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from prefect_cancel_doctor.errors import TargetError
from prefect_cancel_doctor.kinds.process.flow import ensure_flow, prefect_in_tree, runs_flow_engine
from prefect_cancel_doctor.model import Frame, SampleFailure
from tests.render.test_render import report_of, sleeping

SLEEP = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"


@pytest.fixture
def parent_of() -> Iterator[subprocess.Popen[str]]:
    """A shell (no run id of its own) whose child carries a flow run's id, as a Runner's engine does."""
    shell = subprocess.Popen(
        ["sh", "-c", f'PREFECT__FLOW_RUN_ID="$RUN" "{sys.executable}" -c "{SLEEP}"; true'],
        env={**os.environ, "RUN": "0b6c9d6e-0000-4000-8000-000000000001"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdout is not None
    child = int(shell.stdout.readline())
    yield shell
    os.kill(child, signal.SIGKILL)
    shell.wait()


def test_a_process_whose_child_carries_a_run_id_is_a_flow(parent_of: subprocess.Popen[str]) -> None:
    assert prefect_in_tree(parent_of.pid) is True


def test_a_plain_process_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", SLEEP], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and int(child.stdout.readline()) == child.pid
        assert prefect_in_tree(child.pid) is False
        with pytest.raises(TargetError) as info:
            ensure_flow(child.pid, report_of(sleeping()))
        assert info.value.exit_code == 2 and f"process {child.pid} is not a Prefect flow" in str(info.value)
    finally:
        child.kill()
        child.wait()


def _with_process(**changes: object) -> object:
    d = sleeping()
    assert d.target is not None
    process = dataclasses.replace(d.target.processes[0], **changes)  # type: ignore[arg-type]
    return report_of(dataclasses.replace(d, target=dataclasses.replace(d.target, processes=(process,))))


def test_the_flow_engine_in_a_stack_makes_a_flow_of_a_script_that_calls_one() -> None:
    assert runs_flow_engine(report_of(sleeping())) is False
    d = sleeping()
    assert d.target is not None
    process = d.target.processes[0]
    thread = process.dumps[-1][0]
    engine = Frame("run_flow_sync", "/venv/lib/python3.11/site-packages/prefect/flow_engine.py", 1500)
    called = dataclasses.replace(thread, frames=(*thread.frames, engine))
    dumps = (*process.dumps[:-1], (called, *process.dumps[-1][1:]))
    report = _with_process(dumps=dumps)
    assert runs_flow_engine(report) is True  # type: ignore[arg-type]


def test_a_process_that_could_not_be_read_is_not_called_no_flow() -> None:
    denied = _with_process(dumps=(), failure=SampleFailure.PERMISSION_DENIED)
    assert runs_flow_engine(denied) is None  # type: ignore[arg-type]
    not_python = _with_process(dumps=(), python=False)
    assert runs_flow_engine(not_python) is False  # type: ignore[arg-type]
