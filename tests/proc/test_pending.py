"""CPython's own pending-SIGTERM flag, read from real processes' memory (proc/interpreter.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_cancel_doctor.proc.interpreter import sigterm_pending

pytestmark = pytest.mark.real

# A Python-level SIGTERM handler (as Prefect installs), then a C call that never returns.
IN_C_CALL = """
import hashlib, signal, sys
signal.signal(signal.SIGTERM, lambda *args: sys.exit(3))
print("ready", flush=True)
hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 2**31 - 1)
"""


def _cpu_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    utime, stime = stat[stat.rfind(")") + 2 :].split()[11:13]
    return int(utime) + int(stime)


def _start(python: str) -> subprocess.Popen[str]:
    """The script started and inside its C call.

    "ready" comes a few bytecodes before the call: a SIGTERM sent in between (the target
    descheduled on a loaded machine) runs the handler and ends it. A tenth of a second of CPU
    after "ready" can only have been spent inside the call."""
    process = subprocess.Popen([python, "-c", IN_C_CALL], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    at_ready = _cpu_ticks(process.pid)
    deadline = time.monotonic() + 30
    while _cpu_ticks(process.pid) < at_ready + os.sysconf("SC_CLK_TCK") // 10:
        assert time.monotonic() < deadline and process.poll() is None, "the C call never ran"
        time.sleep(0.01)
    return process


@pytest.fixture
def in_c_call() -> Iterator[subprocess.Popen[str]]:
    process = _start(sys.executable)
    yield process
    process.kill()
    process.wait()


def test_no_sigterm_reads_false_then_a_delivered_one_reads_true(in_c_call: subprocess.Popen[str]) -> None:
    assert sys.version_info[:2] in ((3, 10), (3, 11)), "the suite's Python is one whose layout is known"
    assert sigterm_pending(in_c_call.pid) is False
    os.kill(in_c_call.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while sigterm_pending(in_c_call.pid) is not True and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sigterm_pending(in_c_call.pid) is True
    # The kernel's own pending bits are clear: only the interpreter's flag tells.
    status = Path(f"/proc/{in_c_call.pid}/status").read_text()
    assert "SigPnd:\t0000000000000000" in status and in_c_call.poll() is None


def test_a_stripped_interpreter_reads_none() -> None:
    stripped = "/usr/bin/python3"
    if not Path(stripped).exists():
        pytest.skip("no distribution Python on this machine")
    process = _start(stripped)
    try:
        assert sigterm_pending(process.pid) is None
    finally:
        process.kill()
        process.wait()


def test_a_gone_process_reads_none() -> None:
    assert sigterm_pending(2**22 + 1) is None
