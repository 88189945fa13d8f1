"""Scenario `observer_dead`: the worker's cancellation observer gave up.

The flow sleeps on a second worker. The harness stops the server until that
worker logs "Cancellation observer failed", restarts the server (same port,
same database), waits until the worker is ONLINE again, then cancels. The
worker heartbeats but nothing acts on the cancel. Expected verdict:
`cancel_not_observed`, kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-observer-dead")
def observer_dead_flow(ready_path: str) -> None:
    """Write the ready file, then sleep for an hour."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
