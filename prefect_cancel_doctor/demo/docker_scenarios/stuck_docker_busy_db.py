"""Docker scenario `docker_signal_pending`: a SQLite busy wait under a frozen Runner.

PID 1 of the container is the Runner (`prefect flow-run execute`, the job's
default command); the engine is its child. The flow waits for a SQLite lock
that its own first connection holds, with a timeout of ~11 days: SQLite's busy
handler sleeps in C and never returns to the interpreter, so the SIGTERM the
Runner sends on cancel leaves Prefect's Python-level handler pending. A healthy
Runner SIGKILLs 30 s later; the harness freezes the Runner (SIGSTOP from the
host) once the SIGTERM has arrived, so that escalation never happens.

The C-level signal handler writes the signal number to the wakeup fd even while
the main thread is stuck; a daemon thread turns that into `<ready_path>.sigterm`,
the harness's handshake for "SIGTERM delivered". Expected verdict:
`signal_pending`, kind `database`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import tempfile
import threading
from pathlib import Path

from prefect import flow


def _witness_signals(read_fd: int, marker: str) -> None:
    """Record that SIGTERM arrived (the Python handler itself cannot run yet)."""
    while True:
        data = os.read(read_fd, 64)
        if int(signal.SIGTERM) in data:
            Path(marker).write_text("sigterm")


@flow(name="stuck-docker-busy-db")
def busy_db_flow(ready_path: str) -> None:
    """Wait on a SQLite lock held by our own other connection."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(
        target=_witness_signals,
        args=(read_fd, ready_path + ".sigterm"),
        name="pcd-sigterm-witness",
        daemon=True,
    ).start()
    database = os.path.join(tempfile.mkdtemp(), "busy.db")
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(database, timeout=10**6, isolation_level=None)
    Path(ready_path).write_text("ready")
    waiter.execute("BEGIN EXCLUSIVE")  # demo: blocks here
