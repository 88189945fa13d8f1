"""sample_process against real stuck Python processes, real py-spy and the real /proc.

Each program in tests/fixtures/programs/ prints "ready" right before its `# BLOCK` line; the
expected line number is read from that marker, never hard-coded.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.model import KernelThread, ProcessSample, ProcSnapshot, ThreadSample
from prefect_cancel_doctor.proc.procfs import flow_run_processes, read_process, read_state
from prefect_cancel_doctor.sample import (
    PermissionDenied,
    ProcessGone,
    PySpyNotFound,
    SampleRequest,
    sample_many,
    sample_process,
    sampler,
)
from prefect_cancel_doctor.sample.pyspy import find_py_spy
from prefect_cancel_doctor.sample.sampler import EXITED
from tests.helpers import IN_CI

PROGRAMS = Path(__file__).parents[1] / "fixtures" / "programs"

# time.sleep is clock_nanosleep from Python 3.11 on, select() before.
SLEEP_SYSCALLS = ("clock_nanosleep", "select", "pselect6")
SLEEP_WCHANS = ("hrtimer_nanosleep", "do_nanosleep", "poll_schedule_timeout", "do_select")

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]


def marker_line(program: str) -> int:
    lines = (PROGRAMS / program).read_text().splitlines()
    return next(number for number, text in enumerate(lines, 1) if text.rstrip().endswith("# BLOCK"))


@contextmanager
def running(program: str, *args: str, prefix: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[str]]:
    """Start a program, wait for its "ready" handshake, kill its whole session afterwards."""
    child = subprocess.Popen(
        [*prefix, sys.executable, str(PROGRAMS / program), *args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], 30)
        assert readable, f"{program} never said ready"
        assert child.stdout.readline().strip() == "ready", f"{program} exited before ready"
        yield child
    finally:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition on the kernel's state (not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.001)


def snapshot(pid: int) -> ProcSnapshot:
    proc = read_process(pid)
    assert proc is not None, f"process {pid} is gone"
    return proc


def kernel_thread(pid: int, tid: int) -> KernelThread | None:
    proc = read_process(pid)
    return next((t for t in proc.threads if t.tid == tid), None) if proc else None


def wait_in_syscall(pid: int, tid: int, *syscalls: str) -> None:
    wait_until(
        lambda: (thread := kernel_thread(pid, tid)) is not None and thread.syscall_name in syscalls,
        f"thread {tid} of {pid} is in {' or '.join(syscalls)}",
    )


def sample(pid: int, **options: Any) -> ProcessSample:
    """sample_process with short intervals; skip without ptrace rights, except in CI."""
    options = {"samples": 2, "interval": 0.05, **options}
    try:
        return sample_process(pid, "flow", **options)
    except PermissionDenied as exc:
        if IN_CI:
            raise
        pytest.skip(f"py-spy may not attach here: {exc}")


def thread_by_tid(result: ProcessSample, tid: int, dump: int = 0) -> ThreadSample:
    """The thread in one dump."""
    return next(t for t in result.dumps[dump] if t.native_id == tid)


def natives(result: ProcessSample, tid: int) -> list[bool]:
    """Which of the thread's dumps have native frames."""
    return [thread_by_tid(result, tid, i).native_frames != () for i in range(len(result.dumps))]


def test_a_call_its_python_frames_and_syscall_explain_gets_no_native_dump() -> None:
    # time.sleep, in clock_nanosleep: py-spy's native unwinding (~10x a plain dump's pause) adds nothing
    with running("sleep_main.py") as child:
        wait_in_syscall(child.pid, child.pid, *SLEEP_SYSCALLS)
        result = sample(child.pid, samples=3)
        assert natives(result, child.pid) == [False, False, False]
        assert not result.native and result.errors == ()


def test_c_code_running_gets_one_native_dump_after_a_plain_one() -> None:
    # a C call computing (state R): only native frames say which C routine
    with running("pbkdf2_busy.py") as child:
        wait_until(lambda: read_state(child.pid) == "R", "the KDF is running")
        result = sample(child.pid, samples=3)
        assert natives(result, child.pid) == [False, True, False]
        assert result.native


def test_a_process_sampled_once_gets_a_native_dump() -> None:
    with running("sleep_main.py") as child:
        wait_in_syscall(child.pid, child.pid, *SLEEP_SYSCALLS)
        result = sample(child.pid, samples=1)
        assert natives(result, child.pid) == [True]
        assert result.native


def assert_not_stopped(pid: int) -> None:
    assert read_state(pid) not in ("T", "t")


def test_main_thread_in_time_sleep() -> None:
    with running("sleep_main.py") as child:
        wait_in_syscall(child.pid, child.pid, *SLEEP_SYSCALLS)

        result = sample(child.pid, samples=1)

        assert (result.python, result.native, result.errors) == (True, True, ())
        assert len(result.dumps) == 1
        main = thread_by_tid(result, child.pid)
        frame = main.frames[0]
        assert (frame.function, frame.filename, frame.line) == (
            "wait_forever",
            str(PROGRAMS / "sleep_main.py"),
            marker_line("sleep_main.py"),
        )
        assert frame.code == "time.sleep(3600)  # BLOCK"
        assert main.native_frames[0] in SLEEP_SYSCALLS
        assert main.kernel is not None
        assert main.kernel.state == "S"
        assert main.kernel.wchan is not None
        assert main.kernel.wchan.startswith(SLEEP_WCHANS)
        assert main.kernel.syscall_name in SLEEP_SYSCALLS
        assert_not_stopped(child.pid)


def test_blocked_socket_recv_shows_its_peer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with running("socket_recv.py", f"127.0.0.1:{port}") as child:
            wait_in_syscall(child.pid, child.pid, "recvfrom")

            result = sample(child.pid, samples=1)

            main = thread_by_tid(result, child.pid)
            assert (Path(main.frames[0].filename).name, main.frames[0].line) == (
                "socket_recv.py",
                marker_line("socket_recv.py"),
            )
            assert "recv" in main.native_frames[0]
            assert main.kernel is not None
            assert main.kernel.syscall_name == "recvfrom"
            assert result.proc is not None
            assert [(s.remote, s.state) for s in result.proc.sockets] == [
                (f"127.0.0.1:{port}", "ESTABLISHED")
            ]
            assert_not_stopped(child.pid)


def test_sqlite_busy_wait(tmp_path: Path) -> None:
    with running("sqlite_busy.py", str(tmp_path / "db.sqlite")) as child:
        wait_in_syscall(child.pid, child.pid, *SLEEP_SYSCALLS)

        result = sample(child.pid, samples=1)

        main = thread_by_tid(result, child.pid)
        assert (main.frames[0].function, main.frames[0].line) == ("write", marker_line("sqlite_busy.py"))
        assert any("sqlite3" in name for name in main.native_frames)


def test_cpu_bound_c_call() -> None:
    with running("pbkdf2_busy.py") as child:
        wait_until(lambda: read_state(child.pid) == "R", "the KDF is running")

        result = sample(child.pid, samples=1)

        main = thread_by_tid(result, child.pid)
        assert (main.frames[0].function, main.frames[0].line) == ("derive", marker_line("pbkdf2_busy.py"))
        assert main.active
        assert any("PBKDF2" in name.upper() for name in main.native_frames)


def test_non_daemon_thread_and_main_thread_in_shutdown() -> None:
    with running("thread_sleep.py") as child:
        worker_tid = max(t.tid for t in snapshot(child.pid).threads)
        wait_in_syscall(child.pid, worker_tid, *SLEEP_SYSCALLS)
        wait_in_syscall(child.pid, child.pid, "futex")

        result = sample(child.pid)

        worker = thread_by_tid(result, worker_tid)
        assert worker.name == "uploader"
        assert (worker.frames[0].function, worker.frames[0].line) == ("work", marker_line("thread_sleep.py"))
        assert worker.kernel is not None
        assert worker.kernel.tid == worker_tid
        main = thread_by_tid(result, child.pid)
        assert main.name == "MainThread"
        assert main.frames[0].function == "_shutdown"


def test_event_loop_thread_calling_time_sleep() -> None:
    with running("asyncio_blocking.py") as child:
        wait_in_syscall(child.pid, child.pid, *SLEEP_SYSCALLS)

        result = sample(child.pid)

        main = thread_by_tid(result, child.pid)
        functions = [f.function for f in main.frames]
        assert (functions[0], main.frames[0].line) == ("flow", marker_line("asyncio_blocking.py"))
        # Python < 3.11 has no co_qualname: py-spy then shows "_run_once" alone.
        assert any(function.endswith("_run_once") for function in functions)


def test_locals_are_redacted() -> None:
    with running("locals_secret.py") as child:
        wait_in_syscall(child.pid, child.pid, *SLEEP_SYSCALLS)

        result = sample(child.pid, locals=True, native=False)

        frames = thread_by_tid(result, child.pid).frames
        local_values = frames[0].locals
        assert local_values is not None
        assert local_values["password"] == local_values["api_key"] == "<redacted>"
        assert local_values["monkey"] == '"banana"'
        # Only locals are redacted: the call site's source line still shows its literal.
        assert all("hunter2" not in value for f in frames for value in (f.locals or {}).values())


def test_not_python() -> None:
    child = subprocess.Popen(["sleep", "100"])
    try:
        result = sample(child.pid)

        assert result.python is False
        assert result.dumps == ()
        assert result.proc is not None
        assert result.proc.comm == "sleep"
    finally:
        child.kill()
        child.wait()


def test_process_gone() -> None:
    with running("sleep_main.py") as child:
        pid = child.pid
    with pytest.raises(ProcessGone):
        sample_process(pid, "flow")


def test_process_exiting_during_sampling() -> None:
    with running("sleep_main.py") as child, ThreadPoolExecutor(1) as pool:
        future = pool.submit(sample, child.pid, samples=1000, interval=0.01)
        # Handshake: once py-spy has been started, sampling is under way.
        wait_until(lambda: _py_spy_running() or future.done(), "py-spy runs")
        os.killpg(child.pid, signal.SIGKILL)

        result = future.result()

    assert EXITED in result.errors
    assert len(result.dumps) < 1000


def test_permission_denied_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        # Root: run the real py-spy as nobody against our own child.
        wrapper = tmp_path / "py-spy-as-nobody"
        wrapper.write_text(
            f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {find_py_spy()} "$@"\n'
        )
        wrapper.chmod(0o755)
        monkeypatch.setenv("PCD_PY_SPY", str(wrapper))
    with running("sleep_main.py") as child:
        target = child.pid if os.geteuid() == 0 else 1

        with pytest.raises(PermissionDenied) as denied:
            sample_process(target, "flow", samples=1)

    assert "SYS_PTRACE" in str(denied.value)
    assert "ptrace_scope" in str(denied.value)


def test_missing_py_spy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCD_PY_SPY", "/nonexistent/py-spy")
    with running("sleep_main.py") as child, pytest.raises(PySpyNotFound):
        sample_process(child.pid, "flow", samples=1)


def test_timeout_never_leaves_the_target_stopped() -> None:
    with running("sleep_main.py") as child:
        # No dump fits in 2 ms; the longer timeouts kill py-spy at later points of its work.
        for timeout in (0.002, 0.01, 0.02, 0.04):
            result = sample(child.pid, samples=1, timeout=timeout)

            if timeout == 0.002:
                assert result.dumps == ()
                assert "did not finish within 0.002s" in result.errors[0]
            assert_not_stopped(child.pid)


@pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="unshare --pid needs root")
def test_process_in_a_pid_namespace_falls_back_from_native_and_maps_tids() -> None:
    prefix = ("unshare", "--pid", "--fork", "--mount-proc")
    with running("sleep_main.py", prefix=prefix) as unshare:
        (pid,) = snapshot(unshare.pid).children
        wait_in_syscall(pid, pid, *SLEEP_SYSCALLS)

        result = sample(pid, samples=1)  # its one dump is native

        assert result.proc is not None
        assert result.proc.ns_pid == 1
        (main,) = result.dumps[-1]
        # py-spy reports the namespace-local tid (none at all for Python < 3.11).
        assert main.native_id in (1, None)
        assert main.kernel is not None
        assert main.kernel.tid == pid
        assert main.frames[0].line == marker_line("sleep_main.py")
        if not result.native:
            assert any("fell back to plain dumps" in error for error in result.errors)


def test_sample_many_keeps_input_order() -> None:
    with running("sleep_main.py") as first, running("sleep_main.py") as second:
        gone = subprocess.Popen(["true"])
        gone.wait()
        requests = [
            SampleRequest(second.pid, "flow", samples=1),
            SampleRequest(gone.pid, "child", samples=1),
            SampleRequest(first.pid, "runner", samples=1),
        ]

        results = sample_many(requests, max_workers=2)

        assert isinstance(results[0], ProcessSample)
        assert isinstance(results[1], ProcessGone)
        assert isinstance(results[2], ProcessSample)
        assert (results[0].pid, results[0].role) == (second.pid, "flow")
        assert (results[2].pid, results[2].role) == (first.pid, "runner")


def test_readers_never_raise_while_processes_exit() -> None:
    run_id = "race-test"
    children = [
        subprocess.Popen(["true"], env={**os.environ, "PREFECT__FLOW_RUN_ID": run_id}) for _ in range(20)
    ]
    try:
        for child in children:
            while child.poll() is None:
                read_process(child.pid)
                flow_run_processes()
            assert read_process(child.pid) is None
    finally:
        for child in children:
            child.wait()


def _py_spy_running() -> bool:
    """Is one of our threads' children py-spy right now? Cheap enough to poll every millisecond:
    plain dumps last only a few milliseconds."""
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "py-spy":
                        return True
    return False


def test_a_source_line_is_read_once_however_many_dumps_and_threads_stand_at_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Prefect engine has dozens of threads waiting at the same few lines, dump after dump.
    reads: list[tuple[str, int]] = []
    read = sampler.read_source_line

    def counted(pid: int, filename: str, line: int, *args: Any, **kwargs: Any) -> str | None:
        reads.append((filename, line))
        return read(pid, filename, line, *args, **kwargs)

    monkeypatch.setattr(sampler, "read_source_line", counted)
    with running("thread_sleep.py") as child:
        wait_in_syscall(child.pid, child.pid, *SLEEP_SYSCALLS, "futex")
        result = sample(child.pid, samples=3)
    frames = [f for dump in result.dumps for thread in dump for f in thread.frames]
    assert len(result.dumps) == 3 and len(frames) > len(set(reads))
    assert len(reads) == len(set(reads))
    block = str(PROGRAMS / "thread_sleep.py"), marker_line("thread_sleep.py")
    assert block in reads
    assert all(f.code == "time.sleep(3600)  # BLOCK" for f in frames if (f.filename, f.line) == block)
