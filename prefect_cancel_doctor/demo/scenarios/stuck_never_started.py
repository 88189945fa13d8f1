"""Scenario `never_started`: a run claimed by a worker that never started it.

The harness proposes Pending through the API, as a worker does when it claims
a run, then cancels it; no worker that could act is polling. This flow never
runs. Expected verdict: `never_started`, no blocking call.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-never-started")
def never_started_flow(ready_path: str) -> None:
    """Never executed: the run is stuck before any process exists."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
