"""Scenario `hook`: the flow ends on SIGTERM, but its on_cancellation hook hangs.

A Runner runs `on_cancellation` hooks itself, after the flow process is gone
and before it proposes Cancelled (a sync hook in a thread of its own). This
hook writes a handshake file and sleeps, so the run stays Cancelling while
nothing of it runs and the worker looks healthy. Expected verdict:
`cancellation_hook_hang`, kind `sleep`, at the marked line in the hook.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow


def notify_downstream(flow: Any, flow_run: Any, state: Any) -> None:
    """A cancellation hook that waits on something that never answers."""
    Path(flow_run.parameters["ready_path"]).with_suffix(".hook").write_text("in hook")
    time.sleep(3600)  # demo: blocks here


@flow(name="stuck-hook", on_cancellation=[notify_downstream])
def hook_flow(ready_path: str) -> None:
    """Sleep until cancelled; SIGTERM ends this flow at once."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)
