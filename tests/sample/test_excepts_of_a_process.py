"""A real process whose loop swallows the termination signal, sampled with real py-spy and /proc,
its source read through /proc/PID/root (sample/excepts.py, procfs.read_source_text)."""

from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from prefect_cancel_doctor.model import ProcessSample, Role
from prefect_cancel_doctor.proc.procfs import read_source_text, read_state
from prefect_cancel_doctor.sample import SampleRequest, sample_many
from prefect_cancel_doctor.sample.excepts import find_swallowing

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]

PROGRAM = """\
import time


def main():
    print("ready", flush=True)
    for item in range(10**6):  # LOOP
        try:
            time.sleep(3600)  # BLOCK
        except BaseException as exc:  # EXCEPT
            print(exc)


main()
"""


def marker(name: str) -> int:
    return next(n for n, text in enumerate(PROGRAM.splitlines(), 1) if text.rstrip().endswith(f"# {name}"))


def test_a_real_loop_that_swallows_the_signal_is_named(tmp_path: Path) -> None:
    script = tmp_path / "swallowing_flow.py"
    script.write_text(PROGRAM)
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], 30)
        assert readable and child.stdout.readline().strip() == "ready", "the program never said ready"
        deadline = time.monotonic() + 30
        while read_state(child.pid) != "S":  # asleep in time.sleep, not between the print and it
            assert time.monotonic() < deadline, "the program never went to sleep"
            time.sleep(0.01)

        (result,) = sample_many(
            [SampleRequest(child.pid, Role.ENGINE, samples=2, interval=0.1, native=False)]
        )
        assert isinstance(result, ProcessSample), result
        swallowing = find_swallowing(result, functools.partial(read_source_text, child.pid))
    finally:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    assert len(swallowing) == 1
    (clause,) = swallowing
    assert clause.filename == str(script)
    assert clause.function == "main"
    assert clause.frame_line == marker("BLOCK")
    assert clause.line == marker("EXCEPT")
    assert clause.code == "except BaseException as exc:  # EXCEPT"
    assert clause.catches == "BaseException"
    assert clause.loop_line == marker("LOOP")
