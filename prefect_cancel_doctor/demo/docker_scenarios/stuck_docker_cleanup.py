"""Docker scenario `docker_cleanup_blocks`: the cancel's unwinding hangs in the flow's `finally`.

The engine is PID 1 of the container (`command: python -m prefect.engine`) with
Prefect's SIGTERM handler. The harness cancels the run and sends the container its stop
signal: Prefect's handler raises `TerminationSignal` in the flow's sleep, and on its way
out the flow's `finally` closes a connection that never answers: it writes
`<ready_path>.sigterm`, logs why it closes (the exception in flight) and blocks. Expected
verdict: `signal_ignored` (delivery `delivered`: the engine's `kill` event and the run's
log line; absorbed by `cleanup_blocks`, the `finally` named), kind `sleep`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger


def close_connection(ready_path: str) -> None:
    """Say goodbye to a server that never answers."""
    Path(ready_path + ".sigterm").write_text("sigterm")
    get_run_logger().warning(f"closing the connection ({sys.exc_info()[1]!r})")
    time.sleep(3600)  # demo: blocks here


@flow(name="stuck-docker-cleanup")
def cleanup_flow(ready_path: str) -> None:
    """Work, and close the connection whatever happens."""
    try:
        Path(ready_path).write_text("ready")
        time.sleep(3600)
    finally:
        close_connection(ready_path)
