"""Scenario `sleep`: the flow sleeps in the main thread.

A SIGTERM would interrupt `time.sleep` and end the run; it stays in Cancelling
only because its worker died before the cancel, so nothing ever signals it.
Expected verdict: `cancel_not_observed`, blocking call kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-sleep")
def sleep_flow(ready_path: str) -> None:
    """Write the ready file, then sleep for an hour."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
