"""Main thread waiting for a SQLite lock held by another connection (busy handler)."""

import sqlite3
import sys


def write(path: str) -> None:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(path, timeout=3600, isolation_level=None)
    print("ready", flush=True)
    waiter.execute("INSERT INTO t VALUES (1)")  # BLOCK


write(sys.argv[1])
