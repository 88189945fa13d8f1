"""Docker scenario `docker_orphan`: the run is Cancelled but its container still runs.

The engine runs as PID 1 with no Runner; the run is cancelled, then forced to
CANCELLED through the API with the message the server's cancelling timeout
writes. The container keeps running, holding CPU, memory and connections.
Expected verdict: `orphaned_infrastructure`, kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-docker-orphan")
def orphan_flow(ready_path: str) -> None:
    """Sleep for an hour, long after the run was marked Cancelled."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
