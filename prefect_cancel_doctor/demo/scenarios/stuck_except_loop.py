"""Scenario `except_loop`: `except BaseException` around each item of a loop swallows the cancel.

Prefect's SIGTERM handler raises `TerminationSignal` in the flow; the flow's `except
BaseException` catches it, logs it and goes on to the next item. The harness kills the worker
before its 30 s SIGKILL. Expected verdict: `signal_ignored` (delivery `delivered` — the flow's
log line names TerminationSignal — absorbed by `exception_swallowed`), kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger


@flow(name="stuck-except-loop")
def except_loop_flow(ready_path: str) -> None:
    """Process items one by one; a failing item is logged and skipped."""
    logger = get_run_logger()
    Path(ready_path).write_text("ready")
    for item in range(1_000_000):
        try:
            time.sleep(3600)  # demo: blocks here
        except BaseException as exc:
            logger.warning(f"item {item} failed: {exc!r}; going on")
