"""Docker scenarios `docker_gone_killed` and `docker_gone_removed`: the container dies while Cancelling.

The engine runs as PID 1 with no Runner (`command: python -m prefect.engine`),
so the cancel leaves the run in CANCELLING; then the container is SIGKILLed
(exit 137, as an OOM kill or a lost node would) or deleted. Nothing of the run
is left, only its API state. Expected verdict: `infrastructure_gone`, no
blocking call.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-docker-gone")
def gone_flow(ready_path: str) -> None:
    """Sleep for an hour (until the container is killed)."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
