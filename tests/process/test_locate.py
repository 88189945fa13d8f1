"""Every infrastructure_pid form Prefect's workers write."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.process.locate import is_engine, is_hook_runner, is_runner
from prefect_cancel_doctor.model import Role
from prefect_cancel_doctor.proc.procfs import read_process, same_process, still_same
from prefect_cancel_doctor.proc.roles import argv_role

CONTAINER = "3f1c" + "a" * 60


@pytest.mark.parametrize(
    ("raw", "kind", "detail"),
    [
        ("3055", "process", {"pid": 3055, "host": None}),
        ("worker-7:3055", "process", {"pid": 3055, "host": "worker-7"}),
        (f"http+docker://localhost:{CONTAINER}", "docker", {"container_id": CONTAINER}),
        (f"unix:///var/run/docker.sock:{CONTAINER}", "docker", {"docker_url": "unix:///var/run/docker.sock"}),
        ("prefect:etl-job-x7k2q", "kubernetes", {"namespace": "prefect", "job": "etl-job-x7k2q"}),
        ("6d1c1a7e-uid:prefect:etl-job", "kubernetes", {"namespace": "prefect", "job": "etl-job"}),
        ("prod-cluster::arn:aws:ecs:us-east-1:1:task/prod/abc", "ecs", {"namespace": "prod-cluster"}),
        (None, "none", {}),
        ("", "none", {}),
        ("???", "unknown", {}),
    ],
)
def test_infrastructure_pid_forms(raw: str | None, kind: str, detail: dict[str, object]) -> None:
    ref = parse_infrastructure_pid(raw)
    assert ref.kind == kind
    for key, value in detail.items():
        assert getattr(ref, key) == value


# -- one classification of a process by its command line -----------------------------------

PROC = Path(__file__).parents[1] / "fixtures" / "proc"


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (("/venv/bin/python", "-m", "prefect.engine"), Role.ENGINE),
        (("/venv/bin/python", "/venv/bin/prefect", "flow-run", "execute"), Role.RUNNER),
        (("/venv/bin/python", "/venv/bin/prefect", "worker", "start", "--pool", "p"), Role.RUNNER),
        (
            (
                "/venv/bin/python",
                "/venv/lib/site-packages/prefect/runner/_workspace_runtime_bootstrap.py",
                "hook",
            ),
            Role.HOOK,
        ),
        # Prefect 3.9: the workspace supervisor (later exec'd into the engine), the bootstrap
        # running the engine, and `uv run` in front of it (the launcher, not the engine).
        (("/venv/bin/python3", "-m", "prefect.runner._workspace_supervisor", "/tmp/a/s.json"), Role.ENGINE),
        (("/venv/bin/python", "/p/runner/_workspace_runtime_bootstrap.py", "engine", "f.py:f"), Role.ENGINE),
        (
            (
                "/venv/bin/uv",
                "run",
                "--no-default-groups",
                "--project",
                "/srv/flows",
                "/p/runner/_workspace_runtime_bootstrap.py",
                "engine",
                "f.py:f",
            ),
            Role.LAUNCHER,
        ),
        (("/usr/bin/uv", "run", "serve.py"), None),  # uv running something else
        (("/usr/bin/worker", "start"), None),  # not Prefect
        (("sh", "-c", "prefect worker start --pool p"), None),  # the shell
        (("sleep", "3600"), None),
        ((), None),
    ],
)
def test_argv_role_names_local_processes(argv: tuple[str, ...], role: Role | None) -> None:
    assert argv_role(argv) is role


def test_local_and_container_classifications_are_one() -> None:
    snap = read_process(6999, PROC / "sigterm_ignored")
    assert snap is not None
    for argv, engine, runner, hook in [
        (("python", "-m", "prefect.engine"), True, False, False),
        (("prefect", "flow-run", "execute"), False, True, False),
        (("python", "_workspace_runtime_bootstrap.py", "hook"), False, False, True),
    ]:
        proc = dataclasses.replace(snap, cmdline=argv)
        assert (is_engine(proc), is_runner(proc), is_hook_runner(proc)) == (engine, runner, hook)
    assert not is_runner(None)


# -- the same process, still alive -----------------------------------------------------------


def test_same_process_checks_state_and_start_time() -> None:
    root = PROC / "sigterm_ignored"
    before = read_process(6999, root)
    assert before is not None
    assert same_process(before, root)
    assert not same_process(dataclasses.replace(before, start_time_ticks=before.start_time_ticks + 1), root)
    assert not same_process(dataclasses.replace(before, pid=424242), root)
    assert not still_same(before, dataclasses.replace(before, state="Z"))
    assert not still_same(before, None)
