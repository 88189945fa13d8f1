"""An init or a supervisor is never a Runner, whatever its command line names (issue 20).

`tini -s -- prefect worker start --pool p` runs the worker as its child; when the worker dies it
adopts the worker's flow processes. Taken for the Runner, it would make a dead Runner look alive
("the Runner that launched it is alive") and a pool look served by a worker. The classification is
by argv[0]'s basename (or `comm`), so `uv run ...`, `python -m prefect ...` and `/venv/bin/prefect
...` stay what they are.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from prefect_cancel_doctor.kinds.process.locate import adopter_of, local_workers, runner_of
from prefect_cancel_doctor.model import Role
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.proc.roles import argv_role, assign_roles, supervises, worker_options

WORKER = ("prefect", "worker", "start", "--pool", "p")
ENGINE = ("/venv/bin/python", "-m", "prefect.engine")
RUN_ID = "0b7d5a1e-3c2f-4e51-9a55-6f2d8c1b4a90"
TEMPLATE = Path(__file__).parents[1] / "fixtures" / "proc" / "sigterm_ignored" / "6999"


@pytest.mark.parametrize(
    "argv",
    [
        ("tini", "-s", "--", *WORKER),
        ("/sbin/tini", "-s", "-g", "--", "/venv/bin/prefect", "worker", "start", "--pool", "p"),
        ("/usr/local/bin/tini-static-amd64", "--", *WORKER),
        ("dumb-init", "--", *WORKER),
        ("/usr/bin/dumb-init", "--single-child", "--", "/venv/bin/python", "-m", *WORKER),
        ("/usr/libexec/podman/catatonit", "-P", "--", *WORKER),
        ("/sbin/docker-init", "--", *WORKER),
        ("s6-svscan", "/run/service", *WORKER),
        ("s6-supervise", "prefect", "worker", "start"),
        ("runsv", "prefect", "worker", "start"),
        ("/usr/bin/supervisord", "-n", "-c", "/etc/prefect/worker", "start"),
        ("/usr/bin/python3", "/usr/bin/supervisord", "-n", "-c", "/etc/prefect/worker", "start"),
        ("/lib/systemd/systemd", "--user", "prefect", "worker", "start"),
        ("sudo", "-u", "prefect", *WORKER),
        ("timeout", "3600", *WORKER),
        # the flow engine and the Runner of a deployment's `prefect flow-run execute` alike
        ("tini", "-g", "--", "prefect", "flow-run", "execute"),
        ("/sbin/docker-init", "--", *ENGINE),
        ("dumb-init", "--", "/venv/bin/python", "/p/runner/_workspace_runtime_bootstrap.py", "engine", "f:f"),
        ("tini", "--", "/venv/bin/python", "/p/runner/_workspace_runtime_bootstrap.py", "hook"),
    ],
)
def test_an_init_or_supervisor_running_prefect_has_no_role(argv: tuple[str, ...]) -> None:
    assert supervises(argv)
    assert argv_role(argv) is None
    assert worker_options(list(argv)) is None


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (WORKER, Role.RUNNER),
        (("/venv/bin/prefect", "worker", "start", "--pool", "p"), Role.RUNNER),
        (("/venv/bin/python3", "/venv/bin/prefect", "worker", "start", "--pool", "p"), Role.RUNNER),
        (("/venv/bin/python", "-m", *WORKER), Role.RUNNER),
        (("python3.11", "-m", "prefect", "flow-run", "execute"), Role.RUNNER),
        (("/usr/bin/uv", "run", "--project", "/srv", *WORKER), Role.RUNNER),
        (
            ("uv", "run", "--no-sync", "/p/runner/_workspace_runtime_bootstrap.py", "engine", "f:f"),
            Role.LAUNCHER,
        ),
        (ENGINE, Role.ENGINE),
        # a program merely named like an init is no init when it is a script Python runs...
        (("/venv/bin/python", "init.py", *WORKER), Role.RUNNER),
        # ...and an init's name inside the arguments does not make one
        (("/venv/bin/prefect", "worker", "start", "--pool", "tini"), Role.RUNNER),
    ],
)
def test_prefect_itself_keeps_its_role(argv: tuple[str, ...], role: Role) -> None:
    assert not supervises(argv)
    assert argv_role(argv) is role


def test_worker_options_of_the_worker_not_of_its_init() -> None:
    assert worker_options(["/venv/bin/prefect", "worker", "start", "--pool", "p", "--name", "w"]) == {
        "pool": "p",
        "name": "w",
    }
    assert worker_options(["tini", "-s", "--", "/venv/bin/prefect", "worker", "start", "--pool", "p"]) is None


def test_a_container_whose_pid1_is_an_init_has_the_runner_and_the_engine_below_it() -> None:
    roles, runner = assign_roles(
        [
            (1, 0, ("/sbin/tini", "-g", "--", "prefect", "flow-run", "execute")),
            (7, 1, ("/venv/bin/python", "/venv/bin/prefect", "flow-run", "execute")),
            (9, 7, ENGINE),
        ],
        1,
    )
    assert (roles, runner) == ([(1, Role.PID1), (9, Role.ENGINE)], 7)
    roles, runner = assign_roles([(1, 0, ("/sbin/docker-init", "--", *ENGINE)), (7, 1, ENGINE)], 1)
    assert (roles, runner) == ([(1, Role.PID1), (7, Role.ENGINE)], None)


# -- a flow process adopted by a subreaper, on a /proc tree --------------------------------------


def _process(root: Path, pid: int, ppid: int, argv: Sequence[str], comm: str, environ: str = "") -> None:
    """A process directory in `root`, built from a recorded one with its pid, parent and command."""
    base = root / str(pid)
    shutil.copytree(TEMPLATE, base, symlinks=True)
    (base / "task" / "6999").rename(base / "task" / str(pid))
    for stat in (base / "stat", base / "task" / str(pid) / "stat"):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        fields[1:4] = [str(ppid), str(pid), str(pid)]
        stat.write_text(f"{pid} ({comm[:15]}) {' '.join(fields)}\n")
    for status in (base / "status", base / "task" / str(pid) / "status"):
        lines = status.read_text().replace("6999", str(pid)).replace("PPid:\t6998", f"PPid:\t{ppid}")
        status.write_text(lines.replace("Name:\tpython", f"Name:\t{comm[:15]}"))
    for name in ("comm", f"task/{pid}/comm"):
        (base / name).write_text(comm[:15] + "\n")
    (base / "task" / str(pid) / "children").write_text("")
    (base / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (base / "environ").write_bytes(environ.encode())


@pytest.mark.parametrize(
    ("argv", "comm"),
    [
        (("/usr/libexec/podman/catatonit", "-P", "--", "/venv/bin/prefect", *WORKER[1:]), "catatonit"),
        (("/usr/local/bin/tini-static", "-s", "--", "/venv/bin/prefect", *WORKER[1:]), "tini-static"),
        (("/usr/bin/dumb-init", "--", "/venv/bin/prefect", *WORKER[1:]), "dumb-init"),
        (
            ("/usr/bin/python3", "/usr/bin/supervisord", "-n", "-c", "/etc/prefect/worker", "start"),
            "supervisord",
        ),
    ],
)
def test_the_subreaper_that_adopted_the_flow_is_its_adopter_not_its_runner(
    tmp_path: Path, argv: tuple[str, ...], comm: str
) -> None:
    _process(tmp_path, 500, 1, argv, comm)
    environ = f"PREFECT__FLOW_RUN_ID={RUN_ID}\0PREFECT__CONTROL_PORT=40123\0"
    _process(tmp_path, 600, 500, ENGINE, "python", environ)  # its worker (a child of 500) died
    engine = procfs.read_process(600, tmp_path)
    assert engine is not None and engine.control_port == 40123
    assert runner_of(engine, str(tmp_path)) is None
    adopter = adopter_of(engine, str(tmp_path))
    assert adopter is not None and adopter.pid == 500
    assert local_workers("p", str(tmp_path)) == []


def test_while_the_worker_lives_it_is_the_runner_and_the_pools_worker(tmp_path: Path) -> None:
    _process(tmp_path, 500, 1, ("tini", "-s", "--", "/venv/bin/prefect", *WORKER[1:]), "tini")
    _process(tmp_path, 550, 500, ("/venv/bin/python", "/venv/bin/prefect", *WORKER[1:]), "prefect")
    _process(tmp_path, 600, 550, ENGINE, "python", f"PREFECT__FLOW_RUN_ID={RUN_ID}\0")
    engine = procfs.read_process(600, tmp_path)
    assert engine is not None
    runner = runner_of(engine, str(tmp_path))
    assert runner is not None and runner.pid == 550
    assert local_workers("p", str(tmp_path)) == [550]
