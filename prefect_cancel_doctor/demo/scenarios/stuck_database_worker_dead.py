"""Scenario `database_worker_dead`: the `database` flow, whose worker died before the cancel.

The same SQLite write waiting inside C on a lock another connection holds, but
its worker is SIGKILLed *before* the run is cancelled: no SIGTERM is ever sent.
The interpreter's pending-SIGTERM flag stays 0. Expected verdict:
`cancel_not_observed` (nothing acted on the cancel), kind `database`, with the
secondary finding `signal_pending` (once a SIGTERM comes, this call will still
hold it pending).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from prefect import flow


@flow(name="stuck-database-worker-dead")
def database_worker_dead_flow(ready_path: str, db_path: str = "") -> None:
    """Hold an exclusive lock on one connection, write on another."""
    path = db_path or str(Path(ready_path).with_suffix(".sqlite3"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    writer = sqlite3.connect(path, timeout=3600)
    Path(ready_path).write_text("ready")
    writer.execute("INSERT INTO orders VALUES (1)")  # demo: blocks here
