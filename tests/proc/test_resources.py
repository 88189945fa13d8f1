"""What a blocked call waits on, read from the kernel for real blocked processes (sample/resources.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_cancel_doctor.model import KernelThread, ResourceKind
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.proc.resources import describe

pytestmark = pytest.mark.real


def _blocked_main_thread(pid: int, syscalls: set[str]) -> KernelThread:
    """The process's main thread once it sits in one of `syscalls` (polled, bounded)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        snap = procfs.read_process(pid, read_sockets=False)
        main = next((t for t in snap.threads if t.tid == pid), None) if snap else None
        if main is not None and main.syscall_name in syscalls:
            return main
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never blocked in {syscalls}")


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def test_opening_a_fifo_nobody_writes(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    spawned.append(subprocess.Popen([sys.executable, "-c", f"open({str(fifo)!r}).read()"]))
    thread = _blocked_main_thread(spawned[0].pid, {"openat", "open"})
    resource = describe(spawned[0].pid, thread)
    assert resource is not None and resource.kind is ResourceKind.FIFO
    assert resource.description == f"opening FIFO {fifo}, which no process has open for writing"


def test_reading_a_pipe_names_its_writer(spawned: list[subprocess.Popen[bytes]]) -> None:
    reader = "import subprocess; subprocess.Popen(['sleep', '3600'], stdout=subprocess.PIPE).stdout.read()"
    spawned.append(subprocess.Popen([sys.executable, "-c", reader]))
    thread = _blocked_main_thread(spawned[0].pid, {"read"})
    resource = describe(spawned[0].pid, thread)
    assert resource is not None and resource.kind is ResourceKind.PIPE
    (writer,) = resource.peer_pids
    assert Path(f"/proc/{writer}/comm").read_text().strip() == "sleep"
    assert resource.description == f"reading a pipe whose writer is PID {writer} (sleep 3600)"
    subprocess.run(["pkill", "-P", str(spawned[0].pid)], check=False)


def test_receiving_on_a_socket_names_the_peer(spawned: list[subprocess.Popen[bytes]]) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        client = f"import socket; s = socket.create_connection(('127.0.0.1', {port})); s.recv(1)"
        spawned.append(subprocess.Popen([sys.executable, "-c", client]))
        connection, _ = server.accept()
        thread = _blocked_main_thread(spawned[0].pid, {"recvfrom", "read"})
        resource = describe(spawned[0].pid, thread)
        assert resource is not None and resource.kind is ResourceKind.SOCKET
        assert resource.peer == f"127.0.0.1:{port}"
        assert resource.description == f"a TCP connection to 127.0.0.1:{port}, ESTABLISHED"
        connection.close()
    finally:
        server.close()


def test_waiting_for_a_locked_file_names_its_filesystem(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    path = tmp_path / "lock"
    path.write_text("")
    hold = (
        f"import fcntl, time; f = open({str(path)!r}); fcntl.flock(f, fcntl.LOCK_EX); "
        "print(1, flush=True); time.sleep(3600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    spawned.append(holder)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"1"
    wait = f"import fcntl; f = open({str(path)!r}); fcntl.flock(f, fcntl.LOCK_EX)"
    spawned.append(subprocess.Popen([sys.executable, "-c", wait]))
    thread = _blocked_main_thread(spawned[1].pid, {"flock"})
    resource = describe(spawned[1].pid, thread)
    assert resource is not None and resource.kind is ResourceKind.FILE
    assert resource.path == str(path) and resource.mount_type
    assert resource.description.endswith(f"{path} on {resource.mount_type}")
