"""Docker scenario `docker_no_runner`: the job's command runs the engine with no Runner.

The deployment sets `command: python -m prefect.engine`, so the engine is PID 1
of the container and no Runner watches for the cancel: nothing ever sends
SIGTERM, and the flow sleeps on. Expected verdict: `cancel_not_observed` (the
container's command is the evidence), kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-docker-no-runner")
def no_runner_flow(ready_path: str) -> None:
    """Sleep for an hour."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
