"""Scenario `gone`: the run's process was killed; only the API state is left.

The flow sleeps; the harness kills its worker, SIGKILLs the flow process and
only then cancels the run. It stays in Cancelling with no process at all.
Expected verdict: `infrastructure_gone`, no blocking call.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-gone")
def gone_flow(ready_path: str) -> None:
    """Write the ready file, then sleep for an hour."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
