"""Scenario `thread`: a thread-pool task sleeps while the flow waits for it.

The task runs in a thread of the default `ThreadPoolTaskRunner`. SIGTERM
raises in the main thread only; the engine then shuts the pool down and waits
for the sleeping (non-daemon) thread, so the process never exits. The harness
kills the worker before its 30 s SIGKILL. Expected verdict:
`exit_blocked_by_thread`, kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task


@task
def slow_task(ready_path: str) -> None:
    """Write the ready file from the pool thread, then sleep for an hour."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here


@flow(name="stuck-thread")
def thread_flow(ready_path: str) -> None:
    """Submit the task to the thread pool and wait for its result."""
    future = slow_task.submit(ready_path)
    future.result()
