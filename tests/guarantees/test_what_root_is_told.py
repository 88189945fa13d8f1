"""Root is told what a process is, never to "run as root"; init and kernel threads are not sampled.

`inspect --pid 1` pointed the doctor at the host's init, and a kernel thread got a verdict
(and "stop it now: kill -KILL 2"); root was told to "run as root" for what it could not
read. GIVEN the doctor as root, WHEN it is pointed at PID 1 or a kernel thread, by `inspect`
or as a run's `infrastructure_pid`, THEN `inspect` refuses with exit 2 and one line saying
what the process is (with --any-process too), a run naming them is diagnosed without a
sample of them, and no output tells root to run as root.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0, reason="what root is told: needs root"
    ),
]


def _kernel_thread() -> int:
    """A kernel thread's PID (PF_KTHREAD, 0x00200000, in /proc/PID/stat's flags)."""
    for entry in sorted((p for p in Path("/proc").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        stat = (entry / "stat").read_text()
        if int(entry.name) != 1 and int(stat[stat.rfind(")") + 2 :].split()[6]) & 0x00200000:
            return int(entry.name)
    raise AssertionError("no kernel thread in /proc")


def _told_to_run_as_root(text: str) -> bool:
    return "as root" in text.lower() or "sudo" in text.lower()


@pytest.mark.parametrize("which", ["init", "kernel thread"])
@pytest.mark.parametrize("any_process", [False, True])
def test_inspect_refuses_init_and_kernel_threads(
    clean_env: dict[str, str], which: str, any_process: bool
) -> None:
    pid = 1 if which == "init" else _kernel_thread()
    # WHEN root inspects it
    done = run_cli(
        "inspect", "--pid", str(pid), "--samples", "1", *(["--any-process"] * any_process), env=clean_env
    )
    # THEN exit 2, one line of error saying what it is, no sample, no verdict
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    error = done.stderr.splitlines()[0]
    expected = "PID 1 is this PID namespace's init (" if pid == 1 else f"process {pid} is a kernel thread ("
    assert error.startswith(f"error: {expected}"), done.stderr
    assert not _told_to_run_as_root(done.stderr), done.stderr


def test_what_root_cannot_read_is_said_for_what_it_is() -> None:
    from prefect_cancel_doctor.kinds.process.locate import needs_ptrace

    for pid in (1, _kernel_thread()):
        assert not _told_to_run_as_root(needs_ptrace(pid)), pid
    assert "kernel thread" in needs_ptrace(_kernel_thread())


def test_a_run_naming_init_or_a_kernel_thread_is_diagnosed_without_them(
    demo_environment: DemoEnvironment, tmp_path: Path
) -> None:
    from prefect.client.schemas.objects import State, StateType

    harness = demo_environment.harness
    deployment = uuid.UUID(demo_environment.run("sleep").deployment_id)
    env = clean_environ(PREFECT_API_URL=demo_environment.api_url, PREFECT_HOME=str(tmp_path), COLUMNS="200")
    for pid in (1, _kernel_thread()):
        # GIVEN a run in Cancelling whose infrastructure_pid names it
        run = harness.client.create_flow_run_from_deployment(
            deployment, parameters={"ready_path": "/nonexistent"}, state=State(type=StateType.RUNNING)
        )
        run_id = str(run.id)
        try:
            harness.client.update_flow_run(run.id, infrastructure_pid=str(pid))
            harness.force_state(run_id, "CANCELLING")
            # WHEN root diagnoses it, in JSON and on the terminal
            outputs = [
                run_cli("diagnose", run_id, "--samples", "1", *fmt, env=env)
                for fmt in (("--format", "json"), ())
            ]
            # THEN the process is not taken for the run's, nor sampled, and root is not told to be root
            (entry,) = json.loads(outputs[0].stdout)["runs"]
            assert entry["target"]["processes"] == [], entry["target"]
            assert entry["verdict"]["cause"] != "not_attachable", entry["verdict"]["summary"]
            assert f"infrastructure_pid {pid} " in json.dumps(entry["verdict"]["evidence"])
            for done in outputs:
                assert done.returncode == 1, done.stderr[-2000:]
                assert not _told_to_run_as_root(done.stdout + done.stderr), (pid, done.stdout[-3000:])
        finally:
            harness.force_state(run_id, "CANCELLED", "test over")
