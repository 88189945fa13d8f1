"""Docker scenario `docker_except_loop`: `except BaseException` in a loop swallows the cancel.

The engine is PID 1 of the container (`command: python -m prefect.engine`) with
Prefect's SIGTERM handler. The harness cancels the run and sends the container its stop
signal: Prefect's handler raises `TerminationSignal` in the flow, the flow's `except
BaseException` catches it, writes `<ready_path>.sigterm`, logs it and goes on to the next
item. Expected verdict: `signal_ignored` (delivery `delivered`, absorbed by
`exception_swallowed`, the `except` line named), kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger


@flow(name="stuck-docker-except")
def except_flow(ready_path: str) -> None:
    """Process items one by one; a failing item is logged and skipped."""
    logger = get_run_logger()
    Path(ready_path).write_text("ready")
    for item in range(1_000_000):
        try:
            time.sleep(3600)  # demo: blocks here
        except BaseException as exc:
            Path(ready_path + ".sigterm").write_text("sigterm")
            logger.warning(f"item {item} failed: {exc!r}; going on")
