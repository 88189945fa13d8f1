"""The health report in a terminal at 80 and 120 columns: each table fits, no word is split, run names,
causes, dates and file:line show whole, and the columns that matter least go first."""

from __future__ import annotations

import dataclasses
import io

import pytest
from rich.console import Console

from prefect_cancel_doctor.health.layout import sections
from prefect_cancel_doctor.health.model import HealthReport
from prefect_cancel_doctor.health.terminal import fitted, print_health
from prefect_cancel_doctor.model import BlockingCall, CallKind, Cause
from prefect_cancel_doctor.render import fit
from tests.health.test_render_health import sample

DB = BlockingCall(
    CallKind.DATABASE, "sqlite3.Cursor.execute", "/tmp/pcd-demo-9eugmi4v/flows/stuck_database.py", 27,
    "cur.execute(QUERY)", "MainThread", None, False,
)  # fmt: skip


def report() -> HealthReport:
    """The hand-made report, with a stuck run as the demo has them (the issue's cuts were in it)."""
    base = sample("orphans")
    first = base.stuck[0]
    assert first.verdict is not None
    warthog = dataclasses.replace(
        first,
        flow_run=dataclasses.replace(first.flow_run, id="r3", name="significant-warthog"),
        verdict=dataclasses.replace(first.verdict, cause=Cause.SIGNAL_PENDING, blocking_call=DB),
    )
    return dataclasses.replace(base, stuck=(*base.stuck, warthog))


def shown(width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    print_health(console, report())
    return console.export_text()


def kept(width: int) -> list[tuple[str, list[fit.Column], list[tuple[str, ...]]]]:
    """Each table of the report: its title, the columns it shows at `width` (their cut) and their cells."""
    tables = []
    for section in sections(report()):
        if not section.rows:
            continue
        columns = [fitted(c) for c in section.columns]
        widths = fit.fit(columns, section.rows, width)
        shown = [i for i, w in enumerate(widths) if w is not None]
        tables.append(
            (
                section.title,
                [columns[i] for i in shown],
                [tuple(row[i] for i in shown) for row in section.rows],
            )
        )
    return tables


@pytest.mark.parametrize("width", [80, 120])
def test_every_table_fits_and_no_word_is_split(width: int) -> None:
    text = shown(width)
    assert max(len(line) for line in text.splitlines()) <= width
    words = set(text.split())
    for title, columns, rows in kept(width):
        for column in columns:
            assert set(column.header.split()) <= words, (title, column.header)
        for row in rows:
            for column, cell in zip(columns, row, strict=True):
                for word in cell.split():
                    if column.cut is fit.Cut.NEVER:
                        assert word in words, (title, column.header, word, width)
                    elif column.cut is fit.Cut.END:  # whole, or its start then "…"
                        assert word in words or any(
                            w.endswith("…") and word.startswith(w[:-1]) for w in words
                        ), (title, word)
                    else:  # whole, or "…" then its end
                        assert word in words or any(
                            w.startswith("…") and word.endswith(w[1:]) for w in words
                        ), (title, word)
    # the splits are gone
    for cut in ("significant-war", "sqlite3.Cursor.e", "cancelle", "deployme", "Cancellin"):
        assert cut not in words


@pytest.mark.parametrize("width", [80, 120])
def test_run_names_causes_file_lines_and_dates_show_whole(width: int) -> None:
    words = set(shown(width).split())
    for name in ("significant-warthog", "brave-otter", "remote-run", "late", "[finisher]", "child"):
        assert name in words, name
    for cause in ("signal_pending", "cancel_not_observed"):
        assert cause in words
    assert "(stuck_database.py:27)" in words and "(sleep_main.py:8)" in words
    assert any(
        w.endswith("sleep_main.py:8") for w in words
    )  # the call sites' table: its path cut from the left
    assert "2026-11-27T11:00:00Z" in words  # a date on one line


def test_at_80_the_columns_that_matter_least_go_first() -> None:
    narrow = {title: [c.header for c in columns] for title, columns, _ in kept(80)}
    wide = {title: [c.header for c in columns] for title, columns, _ in kept(120)}
    stuck = next(title for title in narrow if title.startswith("Stuck in Cancelling"))
    # names, causes and calls stay; the age goes last, after the work pool, deployment and where
    assert narrow[stuck] == ["run", "cause", "blocking call"]
    assert wide[stuck] == [
        "run",
        "deployment",
        "work pool",
        "in Cancelling",
        "where",
        "cause",
        "blocking call",
    ]
    orphans = next(title for title in narrow if title.startswith("Suspected orphans"))
    assert narrow[orphans][0] == "run" and "infrastructure" in narrow[orphans]
    assert "worker" not in narrow[orphans] and "worker" in wide[orphans]
