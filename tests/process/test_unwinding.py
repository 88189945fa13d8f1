"""A real flow process that got SIGTERM under Prefect's own handler and is unwinding through its
cleanup, which blocks: the doctor must not read the SIGTERM as one that never came.

Prefect's `capture_sigterm` raises TerminationSignal in the main thread; the flow's `finally`
(or a `with`'s exit) runs on the way out and blocks in `time.sleep`. Its stack looks like a flow
that never got a signal, but for the cleanup it is in. `inspect --pid`, real py-spy and /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from prefect_cancel_doctor.proc.procfs import read_state
from prefect_cancel_doctor.sample.pyspy import find_py_spy
from tests.helpers import clean_environ, run_cli

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]

RUN_ID = "0b6c9d6e-0000-4000-8000-0000000000f1"

FINALLY = """\
import sys
import time

from prefect.utilities.engine import capture_sigterm


def flow():
    try:
        print("ready", flush=True)
        time.sleep(3600)
    finally:  # CLAUSE
        time.sleep(3600)  # BLOCK: the cleanup blocks


with capture_sigterm():
    flow()
"""

WITH = """\
import time

from prefect.utilities.engine import capture_sigterm


class Session:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        time.sleep(3600)  # BLOCK: closing blocks


def flow():
    with Session():  # CLAUSE
        print("ready", flush=True)
        time.sleep(3600)


with capture_sigterm():
    flow()
"""


def marker(program: str, name: str) -> int:
    return next(n for n, text in enumerate(program.splitlines(), 1) if f"# {name}" in text)


@pytest.mark.parametrize(("program", "kind"), [(FINALLY, "finally"), (WITH, "with")], ids=["finally", "with"])
def test_a_flow_unwinding_through_a_blocking_cleanup_is_not_read_as_never_signalled(
    program: str, kind: str, tmp_path: Path
) -> None:
    script = tmp_path / "flow.py"
    script.write_text(program)
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PREFECT__FLOW_RUN_ID": RUN_ID},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGTERM)  # Prefect's handler raises TerminationSignal in the sleep
        deadline = time.monotonic() + 30
        blocked = marker(program, "BLOCK")
        while True:  # until py-spy sees the main thread in the cleanup's sleep
            dump = subprocess.run(
                [find_py_spy(), "dump", "--pid", str(child.pid)], capture_output=True, text=True, check=False
            ).stdout
            if f"flow.py:{blocked})" in dump and read_state(child.pid) == "S":
                break
            assert time.monotonic() < deadline, f"the flow never reached its cleanup:\n{dump}"
            time.sleep(0.1)
        result = run_cli("inspect", "--pid", str(child.pid), "-o", "json", env=clean_environ())
    finally:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    assert result.returncode == 1, result.stderr
    (entry,) = json.loads(result.stdout)["runs"]
    verdict = entry["verdict"]
    clause = f"the `{kind}` at {script}:{marker(program, 'CLAUSE')}"
    # Without a sign either way: never a confident "no SIGTERM came", and the cleanup named.
    assert verdict["cause"] == "cancel_not_observed" and verdict["confidence"] <= 0.5, verdict["summary"]
    assert verdict["summary"].startswith("No sign says whether a SIGTERM reached"), verdict["summary"]
    assert clause in verdict["summary"], verdict["summary"]
    assert verdict["delivery"]["sigterm"] == "unknown" and not verdict["delivery"]["signs_against"]
    (later,) = verdict["also"]
    assert later["cause"] == "signal_ignored" and clause in later["summary"]
    assert (verdict["blocking_call"]["filename"], verdict["blocking_call"]["line"]) == (str(script), blocked)
    (process,) = entry["target"]["processes"]
    assert [(c["kind"], c["line"]) for c in process["cleanup"]] == [(kind, marker(program, "CLAUSE"))]
