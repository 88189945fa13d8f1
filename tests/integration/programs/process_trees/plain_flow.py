"""A flow that sleeps: used by the pull-step and heartbeat-grace staging."""

import time
from pathlib import Path

from prefect import flow


@flow(name="tree-plain")
def plain_flow(ready_path: str) -> None:
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
