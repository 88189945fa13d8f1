"""Scenario `subprocess`: the flow waits for a child process.

A SIGTERM to the run's process group would end both the flow and `sleep`;
the run stays in Cancelling because its worker died before the cancel.
Expected verdict: `cancel_not_observed`, kind `subprocess`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import flow


@flow(name="stuck-subprocess")
def subprocess_flow(ready_path: str) -> None:
    """Run `sleep 3600` and wait for it."""
    Path(ready_path).write_text("ready")
    subprocess.run(["sleep", "3600"], check=False)  # demo: blocks here
