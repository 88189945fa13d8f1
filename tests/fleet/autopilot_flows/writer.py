"""A flow that keeps writing rows to a SQLite file, one every `every` seconds, until it is ended.

The autopilot's tests orphan it (the run marked Cancelled while its process runs on): every row
stamped after the run's Cancelled is work done after everyone believes it stopped.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from prefect import flow


@flow(name="autopilot-writer")
def writer_flow(ready_path: str, database: str, every: float = 0.05) -> None:
    """Insert (time) rows forever; write the ready file once the first row is in."""
    db = sqlite3.connect(database, timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS rows (at REAL NOT NULL)")
    db.execute("INSERT INTO rows VALUES (?)", (time.time(),))
    Path(ready_path).write_text("ready")
    while True:
        db.execute("INSERT INTO rows VALUES (?)", (time.time(),))
        time.sleep(every)  # demo: blocks here
