"""Scenario `lock`: the flow acquires a lock it already holds.

`threading.Lock.acquire` is interruptible by signals on Linux, so a SIGTERM
would end the run; it stays in Cancelling because its worker died before the
cancel. Expected verdict: `cancel_not_observed`, kind `lock`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prefect import flow


@flow(name="stuck-lock")
def lock_flow(ready_path: str) -> None:
    """Take a lock twice: a self-deadlock."""
    lock = threading.Lock()
    lock.acquire()
    Path(ready_path).write_text("ready")
    lock.acquire()  # demo: blocks here
