"""Scenario `async_loop`: an async flow calls blocking code on its event loop.

`time.sleep` inside `async def` blocks the event loop thread: no await point
is ever reached. In Prefect 3.9 the loop runs in the main thread (the engine
calls `asyncio.run`), so a SIGTERM still interrupts `time.sleep` and ends the
run; the harness therefore kills the worker before the cancel. Expected
verdict: `event_loop_blocked`, kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-async-loop")
async def async_loop_flow(ready_path: str) -> None:
    """Block the event loop with a synchronous sleep."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
