"""A process worker's `infrastructure_pid` "<host>:<pid>": naming this host, with nothing of the run
left among this host's processes (all of them read: the suite runs as root), it shows the run was
launched here — what makes `infrastructure_gone` sure (0.95) — while a bare PID shows nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

from prefect_cancel_doctor.kinds.process.locate import locate_processes
from prefect_cancel_doctor.kinds.registry import parse_infrastructure_pid


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_this_hosts_name_in_infrastructure_pid_shows_the_run_was_launched_here() -> None:
    pid, run_id = _dead_pid(), str(uuid.uuid4())

    here = locate_processes(
        run_id, parse_infrastructure_pid(f"{socket.gethostname()}:{pid}"), {}, traces=dict
    )
    bare = locate_processes(run_id, parse_infrastructure_pid(str(pid)), {}, traces=dict)
    elsewhere = locate_processes(run_id, parse_infrastructure_pid(f"other-host:{pid}"), {}, traces=dict)

    assert (
        here.launched_here == f"infrastructure_pid {socket.gethostname()}:{pid}" and here.unreachable is None
    )
    assert any("names this host" in note for note in here.notes)
    assert bare.launched_here is None and bare.unreachable is None
    assert elsewhere.launched_here is None and elsewhere.unreachable is not None
