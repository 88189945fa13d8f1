"""Scenario `swallowed`: the flow's own SIGTERM handler does nothing, then it sleeps.

The handler replaces Prefect's and returns, so a SIGTERM would be swallowed.
Its worker died just before the cancel: while its heartbeats cannot tell whether
it saw the cancel, the first cause is `signal_ignored` (kind `sleep`); where they
prove it died first, `cancel_not_observed` leads and `signal_ignored` follows.
It is also here for `resolve`, which sends SIGTERM, waits its grace period, and
must then SIGKILL.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-swallowed")
def swallowed_flow(ready_path: str) -> None:
    """Swallow SIGTERM and sleep for an hour."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
