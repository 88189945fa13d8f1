"""Docker scenario `docker_gil_held`: a pool thread holds the GIL in C while the flow waits.

The engine is PID 1 of the container (`command: python -m prefect.engine`). A task in
the thread pool calls C code that never releases the GIL (libc `sleep` through
ctypes.PyDLL, standing in for a C extension loop). The harness cancels the run and sends
the container its stop signal: CPython's C handler sets its flag, but the main thread
cannot take the GIL to run Prefect's handler. Expected verdict: `signal_pending`
(absorbed by `gil_held`), at the task's line.
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


@flow(name="stuck-docker-gil")
def gil_flow(ready_path: str) -> None:
    """Submit the task to the thread pool and wait for its result."""
    hold_gil.submit(ready_path).result()
