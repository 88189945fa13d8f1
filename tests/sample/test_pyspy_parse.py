"""Parsing py-spy 0.4.3 output recorded from real stuck processes (tests/fixtures/pyspy)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from prefect_cancel_doctor.core.redact import REDACTED, is_secret_name
from prefect_cancel_doctor.model import ThreadSample
from prefect_cancel_doctor.proc.procfs import read_process
from prefect_cancel_doctor.sample.pyspy import (
    NativeUnavailable,
    NotPython,
    PermissionDenied,
    ProcessGone,
    SamplerError,
    classify_error,
    parse_dump,
)
from prefect_cancel_doctor.sample.sampler import merge

PYSPY = Path(__file__).parent.parent / "fixtures" / "pyspy"
PROC = Path(__file__).parent.parent / "fixtures" / "proc"


def load(name: str) -> tuple[ThreadSample, ...]:
    return parse_dump((PYSPY / f"{name}.json").read_text())


def only_thread(name: str) -> ThreadSample:
    (thread,) = load(name)
    return thread


def top(thread: ThreadSample) -> tuple[str, str, int]:
    frame = thread.frames[0]
    return frame.function, Path(frame.filename).name, frame.line


def test_main_thread_sleeping_plain_dump_has_no_native_frames() -> None:
    thread = only_thread("sleep_main")

    assert top(thread) == ("wait_forever", "sleep_main.py", 8)
    assert [f.function for f in thread.frames] == ["wait_forever", "<module>"]
    assert thread.native_frames == ()
    # Without `import threading`, py-spy cannot name the main thread.
    assert thread.name is None
    assert thread.native_id is not None
    assert not thread.active
    assert not thread.owns_gil
    assert all(f.locals is None and not f.native for f in thread.frames)


def test_main_thread_sleeping_native_dump_splits_native_from_python_frames() -> None:
    thread = only_thread("sleep_main_native")

    assert top(thread) == ("wait_forever", "sleep_main.py", 8)
    assert [f.function for f in thread.frames] == ["wait_forever", "<module>"]
    # Only the C call in progress: the interpreter frames below Python are dropped.
    assert thread.native_frames == ("clock_nanosleep", "time_sleep")


def test_socket_recv() -> None:
    thread = only_thread("socket_recv_native")

    assert top(thread) == ("query", "socket_recv.py", 13)
    assert thread.native_frames[:2] == ("recv", "sock_call_ex")
    assert "sock_recv" in thread.native_frames


def test_sqlite_busy_wait() -> None:
    thread = only_thread("sqlite_busy_native")

    assert top(thread) == ("write", "sqlite_busy.py", 13)
    assert thread.native_frames[:3] == ("clock_nanosleep", "nanosleep", "usleep")
    assert "sqlite3InvokeBusyHandler" in thread.native_frames
    assert "pysqlite_connection_execute" in thread.native_frames


def test_pbkdf2_is_on_cpu_in_c_code() -> None:
    plain = only_thread("pbkdf2")
    native = only_thread("pbkdf2_native")

    assert top(plain) == top(native) == ("derive", "pbkdf2_busy.py", 8)
    # The KDF runs with the GIL released: active, yet not holding it.
    assert native.active and not native.owns_gil
    assert "PKCS5_PBKDF2_HMAC" in native.native_frames
    assert "pbkdf2_hmac_impl" in native.native_frames


def test_non_main_thread_sleeping_while_main_waits_in_shutdown() -> None:
    threads = {t.name: t for t in load("thread_sleep_native")}

    assert set(threads) == {"uploader", "MainThread"}
    assert top(threads["uploader"]) == ("work", "thread_sleep.py", 9)
    assert threads["uploader"].native_frames[0] == "clock_nanosleep"
    assert top(threads["MainThread"]) == ("_shutdown", "threading.py", 1590)
    assert "PyThread_acquire_lock_timed" in threads["MainThread"].native_frames


def test_asyncio_loop_calling_time_sleep() -> None:
    thread = only_thread("asyncio_blocking_native")

    assert thread.name == "MainThread"
    assert top(thread) == ("flow", "asyncio_blocking.py", 9)
    functions = [f.function for f in thread.frames]
    assert functions[1:3] == ["Handle._run", "BaseEventLoop._run_once"]
    # C-extension frames (task_step_impl, with a .c filename) sit below the Python
    # frame here, so only the sleep itself is the call in progress.
    assert thread.native_frames == ("clock_nanosleep", "time_sleep")
    assert not any(f.filename.endswith(".c") for f in thread.frames)


def test_locals_are_redacted_by_name_and_in_urls() -> None:
    thread = only_thread("locals_secret")

    assert thread.frames[0].locals == {
        "password": REDACTED,
        "api_key": REDACTED,
        "monkey": '"banana"',
        "dsn": f'"postgresql://etl:{REDACTED}@db.internal:5432/warehouse"',
        "retries": "3",
    }
    assert thread.frames[1].locals == {}


def test_container_thread_ids_are_namespace_local() -> None:
    thread = only_thread("container_sleep")

    assert thread.native_id == 1
    assert top(thread) == ("wait_forever", "sleep_main.py", 8)
    # py-spy looks tid 1 up in the host's /proc and so cannot tell the thread sleeps.
    assert thread.active


def test_merge_maps_namespace_local_tids_through_nspid() -> None:
    # GIVEN a dump of PID 1 of a namespace, and the host's /proc view of it (host pid 7003)
    proc = read_process(7003, PROC / "container")
    assert proc is not None

    # WHEN they are merged
    (thread,) = merge(load("container_sleep"), proc, PROC / "container")

    # THEN py-spy's tid 1 gets the kernel view of host tid 7003
    assert thread.kernel is not None
    assert (thread.kernel.tid, thread.kernel.wchan) == (7003, "hrtimer_nanosleep")


def test_merge_pairs_the_last_thread_without_tid() -> None:
    # Python < 3.11 in a PID namespace: py-spy reports no os_thread_id at all.
    proc = read_process(7003, PROC / "container")
    assert proc is not None
    threads = tuple(dataclasses.replace(t, native_id=None) for t in load("container_sleep"))

    (thread,) = merge(threads, proc, PROC / "container")

    assert thread.kernel is not None
    assert thread.kernel.tid == 7003


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "DB_PASSWD",
        "client_secret",
        "access_token",
        "apiKey",
        "key",
        "ssh_key",
        "auth_header",
        "aws_credentials",
        "private_pem",
        "cookie_jar",
        "session_id",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["monkey", "keyboard", "keys", "retries", "flow_run", "n"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("stderr_file", "native", "error_type", "words"),
    [
        ("gone", False, ProcessGone, "No such file or directory"),
        ("not_python", False, NotPython, "Failed to find python version"),
        ("permission_unprivileged", False, PermissionDenied, "SYS_PTRACE"),
        ("permission_root", True, PermissionDenied, "ptrace_scope"),
        ("container_sleep_native", True, NativeUnavailable, "UNW_EBADREG"),
        ("container_sleep_native", False, SamplerError, "UNW_EBADREG"),
    ],
)
def test_classify_recorded_errors(
    stderr_file: str, native: bool, error_type: type[SamplerError], words: str
) -> None:
    error = classify_error((PYSPY / f"{stderr_file}.stderr.txt").read_text(), native=native)

    assert type(error) is error_type
    assert words in str(error)


def test_error_message_is_one_line_without_backtrace() -> None:
    stderr = (PYSPY / "container_sleep_native.stderr.txt").read_text() + "\nStack backtrace:\n   0: main\n"

    message = str(classify_error(stderr, native=True))

    assert message == "Failed to get stack traces: UNW_EBADREG: bad register number"
