"""Scenario `gil_held`: a thread-pool task holds the GIL in a C call while the flow waits for it.

The task calls C code that never releases the GIL (here libc `sleep` through ctypes.PyDLL,
which keeps the GIL, standing in for a C extension loop or a catastrophic regular expression
without burning a core). The worker's SIGTERM comes; CPython's C handler sets its flag, but
the main thread cannot take the GIL to run Prefect's handler. The harness kills the worker
before its 30 s SIGKILL. Expected verdict: `signal_pending` (absorbed by `gil_held`), at the
task's line, in the pool thread.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from prefect import flow, task


@task
def hold_gil(ready_path: str) -> None:
    """Write the ready file, then hold the GIL in C for an hour."""
    Path(ready_path).write_text("ready")
    ctypes.PyDLL(None).sleep(3600)  # demo: blocks here


@flow(name="stuck-gil-held")
def gil_held_flow(ready_path: str) -> None:
    """Submit the task to the thread pool and wait for its result."""
    hold_gil.submit(ready_path).result()
