"""Scenario `handler_logs`: the flow's own SIGTERM handler logs and returns, then the flow sleeps on.

The handler replaces Prefect's. The worker's SIGTERM comes, the handler writes a line to the
run's logs and returns, and the sleep resumes; the harness kills the worker before its 30 s
SIGKILL. Expected verdict: `signal_ignored` (delivery `delivered`, absorbed by
`handler_returns`: the run's own log line after the cancel shows the SIGTERM came), kind `sleep`.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from prefect import flow, get_run_logger


@flow(name="stuck-handler-logs")
def handler_logs_flow(ready_path: str) -> None:
    """Log SIGTERM and carry on, sleeping for an hour."""
    logger = get_run_logger()

    def on_term(signum: int, frame: object) -> None:
        logger.warning("received SIGTERM; finishing the current batch first")

    signal.signal(signal.SIGTERM, on_term)
    Path(ready_path).write_text("ready")
    while True:
        time.sleep(3600)  # demo: blocks here
