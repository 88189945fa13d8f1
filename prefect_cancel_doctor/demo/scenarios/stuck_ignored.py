"""Scenario `ignored`: the flow ignores SIGTERM, then sleeps.

`signal.signal(SIGTERM, SIG_IGN)` replaces Prefect's handler, so the worker's
SIGTERM does nothing (the child cannot even acknowledge the cancel intent).
The harness kills the worker before its 30 s SIGKILL. Expected verdict:
`signal_ignored`, kind `sleep`.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-ignored")
def ignored_flow(ready_path: str) -> None:
    """Ignore SIGTERM and sleep for an hour."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
