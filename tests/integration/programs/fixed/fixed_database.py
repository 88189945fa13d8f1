"""`database` fixed as the verdict advises: "set a timeout on the database call
(sqlite3.connect(timeout=...))". The write returns to Python every 2 s, so a
pending SIGTERM runs Prefect's handler."""

import sqlite3
from pathlib import Path

from prefect import flow


@flow(name="fixed-database")
def fixed_database(ready_path: str) -> None:
    path = str(Path(ready_path).with_suffix(".sqlite3"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    writer = sqlite3.connect(path, timeout=2)
    Path(ready_path).write_text("ready")
    while True:
        try:
            writer.execute("INSERT INTO orders VALUES (1)")
            return
        except sqlite3.OperationalError:  # still locked: try again
            continue
