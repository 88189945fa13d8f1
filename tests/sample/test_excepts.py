"""`except` clauses that would swallow Prefect's TerminationSignal, read from source (sample/excepts.py).

Each snippet starts at line 1; the line a frame is on is given as a number.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from prefect_cancel_doctor.model import Frame, ProcessSample, Role, SwallowingExcept, ThreadSample
from prefect_cancel_doctor.proc.procfs import MAX_SOURCE_BYTES, read_source_text
from prefect_cancel_doctor.sample.excepts import find_swallowing, swallowing_except


def found(source: str, line: int, function: str = "flow", **kwargs: bool) -> SwallowingExcept | None:
    return swallowing_except(dedent(source), "/app/etl.py", line, function, **kwargs)


def where(clause: SwallowingExcept | None) -> tuple[int, str, int | None] | None:
    """The clause's line, what it catches and its loop's line."""
    return None if clause is None else (clause.line, clause.catches, clause.loop_line)


def test_a_bare_except_in_a_for_loop_swallows_and_the_loop_goes_on() -> None:
    clause = found(
        """\
        import time
        def flow(items):
            for item in items:
                try:
                    time.sleep(3600)
                except:
                    pass
        """,
        5,
    )
    assert clause == SwallowingExcept(
        filename="/app/etl.py",
        line=6,
        code="except:",
        catches="except:",
        function="flow",
        frame_line=5,
        loop_line=3,
    )


def test_base_exception_in_a_while_loop() -> None:
    source = """\
        def flow():
            while True:
                try:
                    step()
                except BaseException:
                    log("failed")
        """
    assert where(found(source, 4)) == (5, "BaseException", 2)


def test_base_exception_in_a_tuple_with_a_name_bound_and_logged() -> None:
    source = """\
        def flow(items):
            for item in items:
                try:
                    work(item)
                except (ValueError, BaseException) as e:
                    log(e)
        """
    clause = found(source, 4)
    assert where(clause) == (5, "BaseException", 2)
    assert clause is not None and clause.code == "except (ValueError, BaseException) as e:"


def test_termination_signal_by_name() -> None:
    source = """\
        from prefect.exceptions import TerminationSignal
        def flow():
            try:
                work()
            except TerminationSignal:
                print("cancelled, carrying on")
            more_work()
        """
    assert where(found(source, 4)) == (5, "TerminationSignal", None)


def test_external_signal_dotted() -> None:
    source = """\
        import prefect.exceptions
        def flow(items):
            for item in items:
                try:
                    work(item)
                except prefect.exceptions.ExternalSignal as exc:
                    print(exc)
        """
    assert where(found(source, 5)) == (6, "prefect.exceptions.ExternalSignal", 3)


def test_an_alias_of_termination_signal() -> None:
    source = """\
        from prefect.exceptions import TerminationSignal as Stop
        def flow():
            try:
                work()
            except Stop:
                pass
        """
    assert where(found(source, 4)) == (5, "Stop", None)


@pytest.mark.parametrize(
    "reraise",
    ["raise", "raise e", "raise RuntimeError('cancelled') from e", "raise SystemExit(1)"],
)
def test_a_handler_that_raises_does_not_swallow(reraise: str) -> None:
    source = f"""\
        def flow(items):
            for item in items:
                try:
                    work(item)
                except BaseException as e:
                    log(e)
                    {reraise}
        """
    assert found(source, 4) is None


@pytest.mark.parametrize("ending", ["sys.exit(1)", "os._exit(1)", "exit()"])
def test_a_handler_that_exits_does_not_swallow(ending: str) -> None:
    source = f"""\
        def flow(items):
            for item in items:
                try:
                    work(item)
                except:
                    {ending}
        """
    assert found(source, 4) is None


def test_a_reraise_inside_a_with_of_the_handler_still_ends_it() -> None:
    source = """\
        def flow():
            try:
                work()
            except BaseException:
                with lock:
                    raise
        """
    assert found(source, 3) is None


def test_a_handler_that_lets_the_signal_through_by_its_type_does_not_swallow() -> None:
    source = """\
        def flow():
            try:
                work()
            except BaseException as e:
                if not isinstance(e, Exception):
                    raise
                log(e)
        """
    assert found(source, 3) is None


def test_a_handler_that_reraises_only_other_types_swallows() -> None:
    source = """\
        def flow():
            try:
                work()
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    raise
                log(e)
        """
    assert where(found(source, 3)) == (4, "BaseException", None)


def test_a_reraise_on_an_unrelated_condition_still_swallows() -> None:
    source = """\
        def flow():
            while True:
                try:
                    work()
                except BaseException:
                    if attempts > 3:
                        raise
        """
    assert where(found(source, 4)) == (5, "BaseException", 2)


def test_except_exception_does_not_catch_the_signal() -> None:
    source = """\
        def flow(items):
            for item in items:
                try:
                    work(item)
                except Exception:
                    pass
                except KeyboardInterrupt:
                    pass
        """
    assert found(source, 4) is None


def test_an_earlier_handler_for_the_signal_that_reraises_shadows_a_later_swallowing_one() -> None:
    source = """\
        def flow():
            try:
                work()
            except TerminationSignal:
                raise
            except BaseException:
                pass
        """
    assert found(source, 3) is None


def test_an_outer_swallow_around_an_inner_reraise_is_the_one() -> None:
    source = """\
        def flow(items):
            for item in items:
                try:
                    try:
                        work(item)
                    except BaseException:
                        cleanup()
                        raise
                except BaseException as exc:
                    log(exc)
        """
    assert where(found(source, 5)) == (9, "BaseException", 2)


def test_the_innermost_swallowing_try_is_the_one() -> None:
    source = """\
        def flow():
            try:
                for item in items:
                    try:
                        work(item)
                    except:
                        pass
            except BaseException:
                pass
        """
    assert where(found(source, 5)) == (6, "except:", 3)


def test_a_try_around_a_nested_def_does_not_cover_its_body() -> None:
    source = """\
        def flow():
            try:
                def inner():
                    work()
            except BaseException:
                pass
            inner()
        """
    assert found(source, 4, "inner") is None
    assert found(source, 4, "flow.<locals>.inner") is None


def test_a_try_around_a_nested_def_covers_the_definition_itself() -> None:
    source = """\
        def flow():
            try:
                @decorate(slow())
                def inner():
                    work()
            except BaseException:
                pass
        """
    assert where(found(source, 3)) == (6, "BaseException", None)


def test_a_try_inside_a_nested_def_is_found_from_its_frame() -> None:
    source = """\
        class Job:
            def run(self, items):
                for item in items:
                    try:
                        work(item)
                    except BaseException:
                        continue
        """
    assert where(found(source, 5, "Job.run")) == (6, "BaseException", 3)


@pytest.mark.parametrize("line", [5, 7])
def test_a_line_in_a_handler_or_the_finally_is_not_covered(line: int) -> None:
    source = """\
        def flow():
            try:
                work()
            except BaseException:
                recover()
            finally:
                cleanup()
        """
    assert found(source, line) is None


def test_a_line_in_the_else_of_a_try_is_not_covered() -> None:
    source = """\
        def flow():
            try:
                work()
            except BaseException:
                pass
            else:
                more_work()
        """
    assert found(source, 7) is None


def test_contextlib_suppress_of_base_exception() -> None:
    source = """\
        import contextlib
        def flow(items):
            for item in items:
                with contextlib.suppress(BaseException):
                    work(item)
        """
    clause = found(source, 5)
    assert where(clause) == (4, "contextlib.suppress(BaseException)", 3)
    assert clause is not None and clause.code == "with contextlib.suppress(BaseException):"


def test_suppress_of_termination_signal_imported_by_name() -> None:
    source = """\
        from contextlib import suppress
        def flow():
            with open("x") as f, suppress(OSError, TerminationSignal):
                work(f)
        """
    assert where(found(source, 4)) == (3, "contextlib.suppress(TerminationSignal)", None)


def test_suppress_of_exception_does_not_swallow() -> None:
    source = """\
        def flow():
            with contextlib.suppress(Exception):
                work()
        """
    assert found(source, 3) is None


def test_a_syntax_error_is_none() -> None:
    assert found("def flow(:\n    try:\n        work()\n    except:\n        pass\n", 3) is None
    assert found("x = 1\0\n", 1) is None


def test_an_async_def_with_async_for() -> None:
    source = """\
        async def flow(stream):
            async for item in stream:
                try:
                    await handle(item)
                except BaseException as exc:
                    logger.warning("skipped %s: %s", item, exc)
        """
    assert where(found(source, 4)) == (5, "BaseException", 2)


def test_module_level_code() -> None:
    source = """\
        import time
        while True:
            try:
                time.sleep(60)
            except:
                print("again")
        """
    assert where(found(source, 4, "<module>")) == (5, "except:", 2)


def test_continue_goes_on_with_the_next_item_and_break_after_the_loop() -> None:
    source = """\
        def flow(items):
            for item in items:
                try:
                    work(item)
                except BaseException:
                    {}
            finish()
        """
    assert where(found(source.format("continue"), 4)) == (5, "BaseException", 2)
    assert where(found(source.format("break"), 4)) == (5, "BaseException", None)


def test_a_return_in_the_flow_function_ends_it_but_in_a_helper_its_caller_goes_on() -> None:
    source = """\
        def fetch(url):
            for attempt in range(3):
                try:
                    return get(url)
                except:
                    return None
        """
    assert found(source, 4, "fetch") is None
    assert where(found(source, 4, "fetch", caller_goes_on=True)) == (5, "except:", None)


def test_a_loop_in_the_else_of_a_for_does_not_count() -> None:
    source = """\
        def flow(items):
            for item in items:
                pass
            else:
                try:
                    work()
                except:
                    pass
        """
    assert where(found(source, 6)) == (7, "except:", None)


def test_a_multi_line_statement_in_the_try() -> None:
    source = """\
        def flow():
            try:
                result = client.call(
                    wait=True,
                )
            except BaseException:
                result = None
        """
    assert where(found(source, 4)) == (6, "BaseException", None)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is Python 3.11+")
def test_except_star_is_ignored() -> None:
    source = """\
        def flow():
            try:
                work()
            except* BaseException:
                pass
        """
    assert found(source, 3) is None


def test_a_lambda_frame_is_not_looked_at() -> None:
    source = """\
        def flow():
            try:
                f = lambda: work()
            except BaseException:
                pass
        """
    assert found(source, 3, "<lambda>") is None


def test_a_line_outside_the_source_is_none() -> None:
    assert found("def flow():\n    pass\n", 40) is None
    assert found("def flow():\n    pass\n", 0) is None


# -- find_swallowing: the main thread's user frames of the latest dump ---------------------------

FLOW = dedent(
    """\
    def flow(items):
        for item in items:
            try:
                process(item)
            except BaseException:
                pass

    def process(item):
        try:
            step(item)
        except:
            return None
    """
)


def sample(*dumps: tuple[ThreadSample, ...]) -> ProcessSample:
    return ProcessSample(pid=100, role=Role.ENGINE, proc=None, dumps=dumps, native=False)


def thread(*frames: Frame, name: str = "MainThread", thread_id: int = 1) -> ThreadSample:
    native_id = 100 if name == "MainThread" else 100 + thread_id  # the main thread's is the PID
    return ThreadSample(thread_id, native_id, name, True, False, frames)


def test_find_swallowing_walks_the_main_thread_innermost_first_and_reads_each_file_once() -> None:
    reads: list[str] = []

    def read(filename: str) -> str | None:
        reads.append(filename)
        return FLOW if filename == "/app/etl.py" else None

    main = thread(
        Frame("sleep", "/usr/lib/python3.11/time.py", 1),
        Frame("step", "/app/steps.py", 7),
        Frame("process", "/app/etl.py", 10),
        Frame("flow", "/app/etl.py", 4),
        Frame("run", "/venv/lib/python3.11/site-packages/prefect/flow_engine.py", 900),
    )
    other = thread(Frame("flow", "/app/etl.py", 4), name="worker", thread_id=2)
    stale = thread(Frame("flow", "/app/etl.py", 999))

    result = find_swallowing(sample((stale,), (main, other)), read)

    assert [(c.function, c.line, c.frame_line, c.loop_line) for c in result] == [
        ("process", 11, 10, None),  # its `return None` goes back to the flow's loop
        ("flow", 5, 4, 2),
    ]
    assert sorted(reads) == ["/app/etl.py", "/app/steps.py"]


def test_find_swallowing_return_in_the_outermost_user_frame_is_not_a_swallow() -> None:
    main = thread(Frame("process", "/app/etl.py", 10))
    assert find_swallowing(sample((main,)), lambda f: FLOW) == ()


def test_find_swallowing_without_dumps_or_main_thread_or_source() -> None:
    assert find_swallowing(sample(), lambda f: FLOW) == ()
    worker = thread(Frame("flow", "/app/etl.py", 4), name="worker", thread_id=7)
    assert find_swallowing(sample((worker,)), lambda f: FLOW) == ()
    main = thread(Frame("flow", "/app/etl.py", 4))
    assert find_swallowing(sample((main,)), lambda f: None) == ()


def test_find_swallowing_deduplicates_recursive_frames() -> None:
    main = thread(Frame("flow", "/app/etl.py", 4), Frame("flow", "/app/etl.py", 4))
    assert [c.line for c in find_swallowing(sample((main,)), lambda f: FLOW)] == [5]


# -- read_source_text: the file as the process sees it ---------------------------------------


def test_read_source_text_through_the_process_root(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    root = proc / "42" / "root" / "app"
    root.mkdir(parents=True)
    (root / "etl.py").write_bytes(b"# -*- coding: latin-1 -*-\nname = '\xe9'\r\n\x0cx = 1\n")
    (root / "big.py").write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    (proc / "42" / "cwd").mkdir()
    (proc / "42" / "cwd" / "rel.py").write_text("y = 2\n")
    # Read with the process's credentials (as_target): here, ours.
    uid, gid = os.geteuid(), os.getegid()
    (proc / "42" / "status").write_text(
        f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\nGroups:\n"
    )

    assert read_source_text(42, "/app/etl.py", proc) == "# -*- coding: latin-1 -*-\nname = 'é'\n\x0cx = 1\n"
    assert read_source_text(42, "rel.py", proc) == "y = 2\n"
    assert read_source_text(42, "/app/big.py", proc) is None
    assert read_source_text(42, "/app/missing-file-9f2c.py", proc) is None
    assert read_source_text(42, "<string>", proc) is None
    assert read_source_text(42, "", proc) is None
