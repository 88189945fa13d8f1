"""Scenario `orphan`: the run is marked Cancelled while its process still runs.

The flow sleeps; the harness kills its worker, cancels the run (it stays in
Cancelling), then forces it to Cancelled with the message the server's
cancellation-timeout service uses. The process keeps running. Expected
verdict: `orphaned_infrastructure`, kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-orphan")
def orphan_flow(ready_path: str) -> None:
    """Write the ready file, then sleep for an hour."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
