"""Docker scenario `docker_handler_returns`: the flow's own SIGTERM handler logs and returns.

The engine is PID 1 of the container (`command: python -m prefect.engine`). The flow
replaces Prefect's SIGTERM handler with one that logs and returns. The harness cancels
the run and sends the container its stop signal (what `docker stop` does first, and
`docker kill -s TERM`): the handler writes `<ready_path>.sigterm`, logs, returns, and
the sleep resumes. Expected verdict: `signal_ignored` (delivery `delivered`: the
engine's `kill` event and the run's log line; absorbed by `handler_returns`), kind `sleep`.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from prefect import flow, get_run_logger


@flow(name="stuck-docker-handler")
def handler_flow(ready_path: str) -> None:
    """Log SIGTERM and carry on, sleeping for an hour."""
    logger = get_run_logger()

    def on_term(signum: int, frame: object) -> None:
        Path(ready_path + ".sigterm").write_text("sigterm")
        logger.warning("received SIGTERM; finishing the current batch first")

    signal.signal(signal.SIGTERM, on_term)
    Path(ready_path).write_text("ready")
    while True:
        time.sleep(3600)  # demo: blocks here
