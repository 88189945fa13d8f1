"""Launched by `uv run`: ignores SIGTERM, then sleeps."""

import signal
import time
from pathlib import Path

from prefect import flow


@flow(name="tree-uv")
def uv_flow(ready_path: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
