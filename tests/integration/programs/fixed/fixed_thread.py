"""`thread` fixed as advised: "stop them from an Event set in a finally/on_cancellation hook"."""

import threading
from pathlib import Path

from prefect import flow, task

STOP = threading.Event()


@task
def slow_task(ready_path: str) -> None:
    Path(ready_path).write_text("ready")
    STOP.wait(3600)


@flow(name="fixed-thread")
def fixed_thread(ready_path: str) -> None:
    future = slow_task.submit(ready_path)
    try:
        future.result()
    finally:
        STOP.set()
