"""Every code-change remedy works: the staged flow, fixed as the verdict advises, cancels on its own.

GIVEN each staged cause whose fix is a change to the flow's code, the flow
fixed exactly as the verdict's advice says (`tests/fixtures/programs/fixed/`: the advice is
quoted in each program, and checked here against `remedies.remediation`),
WHEN the run is cancelled with its worker alive,
THEN it reaches Cancelled on the worker's SIGTERM alone, within the Runner's
30 s grace (the worker's audited signals show a SIGTERM and no SIGKILL, which
the Runner sends 30 s after a SIGTERM that did not end the process), and
nothing of it is left running.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from prefect_cancel_doctor.core.remedies import remediation
from prefect_cancel_doctor.model import BlockingCall, CallKind, Cause

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.harness import LocalPrefect, WorkerProcess

pytestmark = pytest.mark.server

PROGRAMS = Path(__file__).parents[1] / "fixtures" / "programs" / "fixed"
POOL = "fixed"
#: How long the worker may take to act on the cancel and the run to end (a loaded machine).
CANCELLED_WITHIN_SECONDS = 150.0


@dataclass(frozen=True)
class Fix:
    """The staged cause, the kind of its blocking call, and the words of the advice applied."""

    cause: Cause
    kind: CallKind
    advice: str


FIXES = {
    "database": Fix(Cause.SIGNAL_PENDING, CallKind.DATABASE, "sqlite3.connect(timeout=...)"),
    "cpu": Fix(Cause.SIGNAL_PENDING, CallKind.CPU, "split it into chunks that return to Python"),
    "ignored": Fix(Cause.SIGNAL_IGNORED, CallKind.SLEEP, "or chain to the previous handler"),
    "thread": Fix(Cause.EXIT_BLOCKED_BY_THREAD, CallKind.SLEEP, "stop them from an Event set in a finally"),
    "async_loop": Fix(Cause.EVENT_LOOP_BLOCKED, CallKind.SLEEP, "`await asyncio.sleep(...)`"),
    "child": Fix(
        Cause.CHILD_PROCESS_SURVIVES, CallKind.SLEEP, "terminate child processes in a finally block"
    ),
    "hook": Fix(Cause.CANCELLATION_HOOK_HANG, CallKind.SLEEP, "bound on_cancellation hooks with timeouts"),
}


@dataclass
class Staged:
    prefect: LocalPrefect
    worker: WorkerProcess
    ready: Path
    runs: dict[str, str]


@pytest.fixture(scope="module")
def staged() -> Iterator[Staged]:
    pytest.importorskip("prefect")
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    def progress(message: str) -> None:
        sys.__stderr__.write(f"[remedies {time.strftime('%H:%M:%S')}] {message}\n")

    with LocalPrefect(log=progress) as prefect:
        flows = prefect.workdir / "fixed"
        shutil.copytree(PROGRAMS, flows)
        ready = prefect.workdir / "ready"
        ready.mkdir()
        prefect.create_process_pool(POOL)
        runs = {}
        for name in FIXES:
            function = f"fixed_{name}"
            deployment = prefect.deploy(
                flow_name=function.replace("_", "-"),
                entrypoint=f"{function}.py:{function}",
                directory=flows,
                pool=POOL,
            )
            runs[name] = prefect.create_run(deployment, {"ready_path": str(ready / name)})
        worker = prefect.start_worker(POOL, "fixed")
        prefect.wait_until(
            lambda: all((ready / name).exists() for name in FIXES), 240, "every fixed flow to start"
        )
        for run_id in runs.values():
            prefect.cancel_run(run_id)
        yield Staged(prefect, worker, ready, runs)


@pytest.mark.parametrize("name", sorted(FIXES))
def test_the_flow_fixed_as_advised_cancels_on_its_own(staged: Staged, name: str) -> None:
    fix = FIXES[name]
    call = BlockingCall(fix.kind, "f", None, None, None, None, None, False)
    assert any(fix.advice in line for line in remediation(fix.cause, call)), "the advice changed"
    prefect, run_id = staged.prefect, staged.runs[name]
    # How soon the worker acts on the cancel depends on the machine's load; what proves the fix
    # is that the process ended within the Runner's 30 s grace: no SIGKILL followed the SIGTERM.
    prefect.wait_until(
        lambda: prefect.state_type(run_id) == "CANCELLED",
        CANCELLED_WITHIN_SECONDS,
        f"{name} to reach Cancelled",
    )
    prefect.wait_until(lambda: not prefect.run_processes(run_id), 10, f"the processes of {name} to exit")
    pid = int(prefect.read_run(run_id).infrastructure_pid or 0)
    sent = [s.signal for s in staged.worker.signals_sent() if s.target == pid and s.signal]
    assert signal.SIGTERM in sent and signal.SIGKILL not in sent, sent
    if name == "child":
        child = int(staged.ready.joinpath(name).with_suffix(".child").read_text())
        prefect.wait_until(lambda: not Path(f"/proc/{child}").exists(), 10, "the child to be terminated")
    if name == "ignored":
        assert staged.ready.joinpath(name).with_suffix(".cleaned").exists()
    if name == "hook":
        assert staged.ready.joinpath(name).with_suffix(".hook").exists()
