"""A local server's database migrated once per Prefect installation, copied for each new server.

A fresh `prefect server start` spends about half its start-up migrating an empty SQLite file
(13.5 s to answer on 2 cores with Prefect 3.9.1; 6.6 s from a migrated copy). So the first server
of an installation that starts on a new database is copied as soon as it answers, before anything
is staged on it: SQLite's backup API gives a consistent snapshot while the server writes, and at
that moment the database holds the schema's version and Prefect's block registrations, nothing
of a run. Later servers on a new database start from that copy; the server still runs its own
start-up on top (no migration left to run, block registrations upserted), so a copy never holds
less than a fresh database would.

The copy is kept in the user's cache (`$XDG_CACHE_HOME/prefect-cancel-doctor/prefect-db/`), one
file per Prefect version and environment (`sys.prefix`: the server is this environment's
`prefect`). Any failure to read or write it only means a server migrates its own database.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path


def template_path() -> Path | None:
    """Where this installation's migrated empty database is kept (None: Prefect not installed, or
    no cache directory: no $XDG_CACHE_HOME and no home)."""
    try:
        version = importlib.metadata.version("prefect")
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except (importlib.metadata.PackageNotFoundError, RuntimeError):
        return None
    environment = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:12]
    return cache / "prefect-cancel-doctor" / "prefect-db" / f"prefect-{version}-{environment}.db"


def start_from_template(database: Path) -> bool:
    """Put a copy of the installation's migrated empty database at `database` (which does not
    exist yet); False when there is none to copy or it could not be copied."""
    template = template_path()
    if template is None or not template.is_file() or database.exists():
        return False
    if not _migrated(template):
        # Damaged (a disk error, a hand edit): every server would fail on it. This one migrates
        # its own database, and is kept as the copy instead.
        with contextlib.suppress(OSError):
            template.unlink()
        return False
    try:
        _write_then_rename(database, lambda partial: shutil.copyfile(template, partial))
    except OSError:
        return False
    return True


def keep_as_template(database: Path) -> None:
    """Snapshot `database`, just migrated by a server that answers, as the installation's template
    (unless one is kept already)."""
    template = template_path()
    if template is None or template.exists():
        return
    with contextlib.suppress(OSError, sqlite3.Error):
        template.parent.mkdir(parents=True, exist_ok=True)
        _write_then_rename(template, lambda partial: _backup(database, partial))


def _migrated(database: Path) -> bool:
    """Whether `database` opens as SQLite and records the schema's version (one alembic row)."""
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            return bool(connection.execute("select count(*) from alembic_version").fetchone() == (1,))
        finally:
            connection.close()
    except sqlite3.Error:
        return False


def _backup(database: Path, destination: str) -> None:
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    target = sqlite3.connect(destination)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _write_then_rename(destination: Path, write: Callable[[str], object]) -> None:
    """`write` a file beside `destination` under a name of its own, then rename it there: a server
    never opens a half-written database, and processes writing the same template at once do not
    mix. The partial file is removed when `write` fails; `write` creates it, so it has the mode any
    new file gets, as a database the server creates does."""
    partial = str(destination.with_name(f".partial-{uuid.uuid4().hex}-{destination.name}"))
    try:
        write(partial)
        os.replace(partial, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
