"""Scenario `database`: a SQLite write waits on a lock another connection holds.

A first connection takes `BEGIN EXCLUSIVE`; a second one (timeout one hour)
then writes. SQLite's busy handler sleeps and retries inside C and never
returns to the interpreter, so Prefect's SIGTERM handler stays pending. The
harness lets the worker send SIGTERM and kills the worker before its 30 s
SIGKILL. Expected verdict: `signal_pending`, kind `database`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from prefect import flow


@flow(name="stuck-database")
def database_flow(ready_path: str, db_path: str = "") -> None:
    """Hold an exclusive lock on one connection, write on another."""
    path = db_path or str(Path(ready_path).with_suffix(".sqlite3"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    writer = sqlite3.connect(path, timeout=3600)
    Path(ready_path).write_text("ready")
    writer.execute("INSERT INTO orders VALUES (1)")  # demo: blocks here
