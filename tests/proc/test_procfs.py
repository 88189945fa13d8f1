"""procfs readers over /proc trees recorded from real stuck processes (see fixtures/proc/README.md)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from prefect_cancel_doctor.model import SocketPeer
from prefect_cancel_doctor.proc.procfs import (
    _parse_status,
    _status_field,
    flow_run_processes,
    has_signal,
    read_process,
    read_source_line,
    read_state,
    thread_ns_tids,
)
from prefect_cancel_doctor.proc.syscalls import syscall_name

PROC = Path(__file__).parent.parent / "fixtures" / "proc"
RUN_ID = "0b7d5a1e-3c2f-4e51-9a55-6f2d8c1b4a90"


def test_sigterm_ignored_by_flow_and_inherited_by_its_child() -> None:
    # GIVEN a flow process that set SIGTERM to SIG_IGN and started `sleep`
    # WHEN both are read
    flow = read_process(6999, PROC / "sigterm_ignored")
    child = read_process(7000, PROC / "sigterm_ignored")

    # THEN SIGTERM is ignored by both, SIGINT is caught by Python only
    assert flow is not None
    assert child is not None
    assert has_signal(flow.sig_ignored, signal.SIGTERM)
    assert has_signal(child.sig_ignored, signal.SIGTERM)
    assert has_signal(flow.sig_caught, signal.SIGINT)
    assert not has_signal(child.sig_caught, signal.SIGINT)
    assert flow.children == (7000,)
    assert child.ppid == 6999
    assert flow.flow_run_id == RUN_ID
    assert flow.cmdline[-1].endswith("sigterm_ignored.py")
    assert (flow.comm, flow.state, flow.ns_pid) == ("python", "S", 6999)
    assert flow.start_time_ticks == 50893
    (main,) = flow.threads
    assert (main.tid, main.state, main.wchan, main.syscall) == (
        6999,
        "S",
        "hrtimer_nanosleep",
        230,
    )
    assert main.syscall_name == syscall_name(230)


def test_flow_run_processes_finds_every_process_of_a_run() -> None:
    assert flow_run_processes(PROC / "sigterm_ignored") == {RUN_ID: [6999, 7000]}
    assert flow_run_processes(PROC / "socket_5432") == {}


def test_children_fall_back_to_scanning_parents(tmp_path: Path) -> None:
    # GIVEN a kernel without task/*/children files
    root = tmp_path / "proc"
    shutil.copytree(PROC / "sigterm_ignored", root, symlinks=True)
    for children in root.glob("*/task/*/children"):
        children.unlink()

    # WHEN the flow is read THEN its child is found through the child's ppid
    flow = read_process(6999, root)
    assert flow is not None
    assert flow.children == (7000,)


def test_thread_in_uninterruptible_sleep() -> None:
    proc = read_process(7007, PROC / "uninterruptible")

    assert proc is not None
    main, worker = proc.threads
    assert (main.state, main.wchan, main.syscall) == ("S", "futex_do_wait", 202)
    assert (worker.tid, worker.state, worker.wchan, worker.syscall) == (
        7008,
        "D",
        "rpc_wait_bit_killable",
        0,
    )
    assert worker.syscall_name == syscall_name(0)


def test_sockets_to_port_5432_over_ipv4_and_ipv6() -> None:
    proc = read_process(7001, PROC / "socket_5432")

    assert proc is not None
    assert proc.sockets == (
        SocketPeer(fd=3, local="127.0.0.1:38176", remote="127.0.0.1:5432", state="ESTABLISHED"),
        SocketPeer(fd=4, local="[::1]:54040", remote="[::1]:5432", state="ESTABLISHED"),
    )
    (main,) = proc.threads
    assert (main.wchan, main.syscall) == ("wait_woken", 45)


def test_process_in_a_pid_namespace() -> None:
    proc = read_process(7003, PROC / "container")

    assert proc is not None
    assert (proc.pid, proc.ns_pid) == (7003, 1)
    assert thread_ns_tids(7003, PROC / "container") == {1: 7003}


def test_comm_with_spaces_and_parens() -> None:
    proc = read_process(7005, PROC / "weird_comm")

    assert proc is not None
    assert proc.comm == "flow) (run 7"
    assert (proc.state, proc.ppid, proc.start_time_ticks) == ("S", 6998, 50994)
    assert [t.name for t in proc.threads] == ["flow) (run 7", "w (1) x"]
    assert [t.state for t in proc.threads] == ["S", "S"]


def test_process_gone_mid_read_gives_none() -> None:
    assert read_process(6999, PROC / "gone_mid_read") is None
    assert read_process(4242, PROC / "gone_mid_read") is None
    assert read_state(4242, PROC / "gone_mid_read") is None


def test_thread_gone_mid_read_is_skipped() -> None:
    proc = read_process(7005, PROC / "gone_mid_read")

    assert proc is not None
    assert [t.tid for t in proc.threads] == [7005]


@pytest.mark.parametrize(
    ("mask", "signum", "expected"),
    [(0x4000, 15, True), (0x4000, 14, False), (0x1, 1, True), (0x1001000, 13, True), (0, 9, False)],
)
def test_has_signal(mask: int, signum: int, expected: bool) -> None:
    assert has_signal(mask, signum) is expected


def test_syscall_names_per_architecture() -> None:
    assert syscall_name(230, "x86_64") == "clock_nanosleep"
    assert syscall_name(202, "x86_64") == "futex"
    assert syscall_name(115, "aarch64") == "clock_nanosleep"
    assert syscall_name(98, "aarch64") == "futex"
    assert syscall_name(9999, "x86_64") is None
    assert syscall_name(None) is None


def test_read_source_line_through_proc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "flow.py"
    source.write_text("import time\n\n    time.sleep(3600)  # BLOCK\n")
    monkeypatch.chdir(tmp_path)
    pid = os.getpid()

    assert read_source_line(pid, str(source), 3) == "time.sleep(3600)  # BLOCK"
    assert read_source_line(pid, "flow.py", 1) == "import time"
    assert read_source_line(pid, str(source), 99) is None
    assert read_source_line(pid, "<frozen runpy>", 1) is None
    assert read_source_line(pid, str(tmp_path / "missing.py"), 1) is None


def test_source_lines_never_show_literal_secrets() -> None:
    from prefect_cancel_doctor.core.redact import redact_code

    assert redact_code('conn = connect(password="hunter2", host="db")') == (
        'conn = connect(password="<redacted>", host="db")'
    )
    assert redact_code("API_KEY = 'pnu_abc'  # demo") == "API_KEY = '<redacted>'  # demo"
    assert (
        redact_code('url = "postgresql://etl:s3cret@db:5432/x"')
        == 'url = "postgresql://etl:<redacted>@db:5432/x"'
    )
    assert redact_code("time.sleep(3600)  # demo: blocks here") == "time.sleep(3600)  # demo: blocks here"


def test_a_threads_masks_read_alone_are_those_of_the_parsed_status() -> None:
    # Every thread's status is read before every dump: only its two masks are looked up in it.
    blocked = {signal.SIGUSR1, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        me = read_process(os.getpid(), read_sockets=False)
        text = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
    assert me is not None
    mine = next(t for t in me.threads if t.tid == threading.get_native_id())
    assert has_signal(mine.sig_blocked, signal.SIGTERM) and has_signal(mine.sig_blocked, signal.SIGUSR1)
    parsed = _parse_status(text)
    for key in list(parsed)[1:]:
        assert _status_field(text, key) == parsed[key], key
    assert _status_field(text, "NoSuchField") is None
