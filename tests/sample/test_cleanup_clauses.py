"""The cleanup code a flow's main thread runs now (sample/excepts.py `cleanup_clause`): code that a
SIGTERM's TerminationSignal would run on its way out, so its stack cannot tell whether one came."""

from __future__ import annotations

from textwrap import dedent

import pytest

from prefect_cancel_doctor.model import Frame, ProcessSample, Role, ThreadSample
from prefect_cancel_doctor.sample.excepts import cleanup_clause, find_clauses

FLOW = dedent(
    """\
    def flow(conn):
        try:
            work(conn)
        finally:
            conn.close()  # FINALLY-BODY
        try:
            work(conn)
        except BaseException:
            rollback(conn)  # CATCHING-EXCEPT-BODY
            raise
        try:
            work(conn)
        except Exception:
            report(conn)  # EXCEPTION-BODY
        with session(conn) as s:  # WITH
            work(s)  # WITH-BODY
        try:
            work(conn)
        except (ValueError, Stop):
            report(conn)  # ALIAS-BODY
    """
)
FLOW = "from prefect.exceptions import TerminationSignal as Stop\n" + FLOW


def line_of(marker: str) -> int:
    return next(n for n, text in enumerate(FLOW.splitlines(), 1) if text.rstrip().endswith(f"# {marker}"))


@pytest.mark.parametrize(
    ("marker", "callee", "kind", "clause_text"),
    [
        ("FINALLY-BODY", "close", "finally", "finally:"),
        ("CATCHING-EXCEPT-BODY", "rollback", "except", "except BaseException:"),
        ("ALIAS-BODY", "report", "except", "except (ValueError, Stop):"),
        ("WITH", "Session.__exit__", "with", "with session(conn) as s:  # WITH"),
    ],
)
def test_the_cleanup_a_termination_signal_would_run_is_named_with_its_clause(
    marker: str, callee: str, kind: str, clause_text: str
) -> None:
    found = cleanup_clause(FLOW, "/app/etl.py", line_of(marker), "flow", callee=callee)
    assert found is not None
    assert (found.kind, found.code, found.frame_line, found.function) == (
        kind,
        clause_text,
        line_of(marker),
        "flow",
    )
    assert FLOW.splitlines()[found.line - 1].strip() == clause_text


@pytest.mark.parametrize(
    ("marker", "callee"),
    [
        ("EXCEPTION-BODY", "report"),  # `except Exception` never runs for TerminationSignal
        ("WITH", "Session.__enter__"),  # entering, not leaving
        ("WITH-BODY", "work"),  # inside the `with`, not its exit
    ],
)
def test_code_no_termination_signal_runs_on_its_way_out_is_not_cleanup(marker: str, callee: str) -> None:
    assert cleanup_clause(FLOW, "/app/etl.py", line_of(marker), "flow", callee=callee) is None


def test_a_def_inside_a_finally_starts_afresh_and_a_broken_source_reads_as_none() -> None:
    source = dedent(
        """\
        try:
            pass
        finally:
            def later():
                wait()
        """
    )
    assert cleanup_clause(source, "/app/x.py", 5, "later", callee="wait") is None
    assert cleanup_clause("def (:", "/app/x.py", 1, "f") is None


def test_find_clauses_names_each_cleanup_of_the_main_thread_innermost_first_reading_each_file_once() -> None:
    reads: list[str] = []

    def read(filename: str) -> str | None:
        reads.append(filename)
        return FLOW if filename == "/app/etl.py" else None

    main = ThreadSample(
        1,
        100,
        "MainThread",
        True,
        False,
        (
            Frame("sleep", "/usr/lib/python3.11/time.py", 1),
            Frame("Session.__exit__", "/app/db.py", 40),
            Frame("flow", "/app/etl.py", line_of("WITH")),
            Frame("run", "/venv/lib/python3.11/site-packages/prefect/flow_engine.py", 900),
        ),
    )
    sample = ProcessSample(pid=100, role=Role.ENGINE, proc=None, dumps=((main,),), native=False)
    swallowing, cleanup = find_clauses(sample, read)
    assert swallowing == ()
    assert [(c.kind, c.line, c.function) for c in cleanup] == [("with", line_of("WITH"), "flow")]
    assert sorted(reads) == ["/app/db.py", "/app/etl.py"]
