"""Scenario `thread_worker_dead`: the `thread` flow, whose worker died before the cancel.

The flow waits on a task it `.submit()`ted to the default `ThreadPoolTaskRunner`;
the task sleeps in a pool thread. Its worker is SIGKILLed *before* the run is
cancelled: no SIGTERM is ever sent, and the main thread still waits in
`future.result()`, a wait a signal interrupts. Expected verdict:
`cancel_not_observed` (nothing acted on the cancel), kind `lock` at the
`future.result()` line, with the secondary finding `exit_blocked_by_thread`
(once a SIGTERM comes, the pool thread will keep the process alive).
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task


@task
def slow_task(ready_path: str) -> None:
    """Write the ready file from the pool thread, then sleep for an hour."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)


@flow(name="stuck-thread-worker-dead")
def thread_worker_dead_flow(ready_path: str) -> None:
    """Submit the task to the thread pool and wait for its result."""
    future = slow_task.submit(ready_path)
    future.result()  # demo: blocks here
