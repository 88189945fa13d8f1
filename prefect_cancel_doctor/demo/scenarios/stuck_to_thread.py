"""Scenario `to_thread`: an async flow awaits blocking work it handed to a thread.

`await asyncio.to_thread(fetch)` runs `fetch` in the event loop's default executor
(a thread named `asyncio_0`); the loop itself sits idle in its selector, and the
awaiting coroutine, suspended, is on no stack. Its worker is SIGKILLed before the
cancel: no SIGTERM is sent. Expected verdict: `cancel_not_observed`, kind `sleep`,
at the line in `fetch` (the thread the flow awaits, not the loop's `epoll_wait`),
with the secondary finding `exit_blocked_by_thread` (once a SIGTERM comes, the
executor's thread keeps the process alive while asyncio waits for it).
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


@flow(name="stuck-to-thread")
async def to_thread_flow(ready_path: str) -> None:
    """Hand the blocking work to a thread and await it."""
    await asyncio.to_thread(fetch, ready_path)
