"""Scenario `to_thread_signalled`: the same async flow as `to_thread`, and the SIGTERM came.

`await asyncio.to_thread(fetch)` runs `fetch` in the event loop's default executor. The
worker's SIGTERM raises TerminationSignal in the main thread, where the event loop runs:
the flow unwinds, and `asyncio.run` (Prefect's engine runs async flows with it) closes its
loop, which waits for the executor's thread, asleep in `fetch`. The worker is then killed
before its SIGKILL. Expected verdict: `exit_blocked_by_thread`, kind `sleep`, at the line in
`fetch`: not `cancel_not_observed` (the main thread sits in the loop's selector, a call a
signal interrupts, but inside `asyncio.Runner.close`, after the flow).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prefect import flow


def fetch(ready_path: str) -> None:
    """Blocking work, run in the executor's thread."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here


@flow(name="stuck-to-thread-signalled")
async def to_thread_signalled_flow(ready_path: str) -> None:
    """Hand the blocking work to a thread and await it."""
    await asyncio.to_thread(fetch, ready_path)
