"""Scenario `child`: the flow starts a child in its own session, then sleeps.

The worker's SIGTERM goes to the flow's process group; the child, in a new
session, never gets it. The flow ends, the run becomes Cancelled, and the
child keeps running. Expected verdict: `child_process_survives`, kind `sleep`
(the survivor runs `time.sleep` from `python -c`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from prefect import flow

SURVIVOR_CODE = "import time; time.sleep(3600)"


@flow(name="stuck-child")
def child_flow(ready_path: str) -> None:
    """Start a detached child, record its PID, and sleep."""
    child = subprocess.Popen([sys.executable, "-c", SURVIVOR_CODE], start_new_session=True)
    Path(ready_path).with_suffix(".child").write_text(str(child.pid))
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
