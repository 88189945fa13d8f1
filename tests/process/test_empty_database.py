"""A local server on a new database starts from the installation's migrated copy (demo/empty_database.py).

Which database a server began from is told by its block types' ids: a server that migrates and
registers Prefect's blocks itself gives them new random ids; one started from the copy keeps the
copy's (registration upserts by name)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from prefect_cancel_doctor.demo import empty_database
from prefect_cancel_doctor.demo.harness import LocalPrefect

pytestmark = pytest.mark.server


def _rows(database: Path, query: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def _block_type_ids(database: Path) -> set[object]:
    return {row[0] for row in _rows(database, "select id from block_type")}


def _a_run_is_stored(prefect: LocalPrefect) -> str:
    """A flow run created and read back through Prefect's client (which retries the 503 a busy
    SQLite answers while the new server's services make their first writes)."""
    from prefect import flow

    @flow(name="empty-database")
    def nothing() -> None: ...

    run = prefect.client.create_flow_run(nothing)
    assert prefect.read_run(str(run.id)).flow_id == run.flow_id
    return str(run.id)


def test_new_servers_start_from_the_first_ones_migrated_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = empty_database.template_path()
    assert template is not None and not template.exists()

    # GIVEN the installation's first server on a new database: it migrates it, and once it
    # answers its database is kept as the copy, before anything is stored on it
    with LocalPrefect(workdir=tmp_path / "first") as first:
        assert template.is_file()
        _a_run_is_stored(first)
        first_ids = _block_type_ids(first.home / "prefect.db")
    assert _rows(template, "select count(*) from alembic_version") == [(1,)]
    assert _rows(template, "select count(*) from flow_run") == [(0,)]
    assert _block_type_ids(template) == first_ids and first_ids

    # WHEN another server starts on a new database
    with LocalPrefect(workdir=tmp_path / "second") as second:
        # THEN it began from the copy, and it serves
        assert _block_type_ids(second.home / "prefect.db") == first_ids
        run_id = _a_run_is_stored(second)
        # a restart on its own database keeps that database (and the copy stays as it was)
        second.restart_server()
        assert str(second.read_run(run_id).id) == run_id
    assert _rows(template, "select count(*) from flow_run") == [(0,)]

    # AND a server told to use another database neither uses the copy nor replaces it
    elsewhere = tmp_path / "elsewhere.db"
    url = f"sqlite+aiosqlite:///{elsewhere}"
    with LocalPrefect(workdir=tmp_path / "third", server_env={"PREFECT_API_DATABASE_CONNECTION_URL": url}):
        assert not (tmp_path / "third" / "prefect-home" / "prefect.db").exists()
        assert _block_type_ids(elsewhere).isdisjoint(first_ids)
    assert _block_type_ids(template) == first_ids


def test_a_damaged_copy_is_replaced_by_the_next_servers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = empty_database.template_path()
    assert template is not None
    template.parent.mkdir(parents=True)
    # GIVEN a copy that is not a database (a disk error, a hand edit)
    template.write_bytes(b"not a database " * 100)
    # WHEN a server starts on a new database, THEN it migrates its own, serves, and its database
    # becomes the copy
    with LocalPrefect(workdir=tmp_path / "server") as prefect:
        _a_run_is_stored(prefect)
        assert _rows(template, "select count(*) from alembic_version") == [(1,)]
        assert _rows(template, "select count(*) from flow_run") == [(0,)]
