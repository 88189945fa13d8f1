"""Prefect 3.9's process trees, staged for real and diagnosed: what the catalog's runs do not show.

One local server, one process worker and one `flow.serve()` script, shared by the module:

- `uv`: the flow's project declares prefect and `uv` is on the worker's PATH, so
  Prefect launches the run with `uv run` (prefect/runner/_uv_command.py): the run's
  PID is uv's, the engine is its child. The flow ignores SIGTERM.
- `prep`: the run is still in its deployment's pull steps (a `run_shell_script` step
  that sleeps) inside Prefect's workspace supervisor when its worker dies.
- `grace`: the worker is killed with the run's process, right after a heartbeat, and
  the scan comes while the API still reports the worker ONLINE (3 missed 30 s
  heartbeats make it OFFLINE): the run must still be `infrastructure_gone`.
- `served`: a run of `flow.serve()`: its flow process is a multiprocessing child that
  carries no PREFECT__FLOW_RUN_ID, and the serve Runner signals it alone, so the
  child it started outlives the cancel.

The worker runs with `PREFECT_WORKER_HEARTBEAT_SECONDS=30` (Prefect's default) and
`uv` never syncs (`UV_NO_SYNC`, `UV_OFFLINE`, this environment as the project's), so
nothing is downloaded. These trees exist only on Prefect 3.9+ (the supervisor, uv
launcher and per-run sessions came with it); `tests/compat` runs the catalog on 3.4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from prefect_cancel_doctor.demo.catalog import marker_line
from tests.helpers import carry_out, clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.harness import LocalPrefect, WorkerProcess

PROGRAMS = Path(__file__).parents[1] / "fixtures" / "programs" / "process_trees"
POOL = "trees"
HEARTBEAT_SECONDS = 30
FINAL = {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]


@dataclass
class Trees:
    prefect: LocalPrefect
    work: Path
    runs: dict[str, str]
    worker: WorkerProcess
    serve: subprocess.Popen[bytes]
    #: When the worker was killed, right after the heartbeat it sent at `heartbeat`.
    killed_at: float

    def env(self, tmp_path: Path) -> dict[str, str]:
        return clean_environ(PREFECT_API_URL=self.prefect.api_url, PREFECT_HOME=str(tmp_path))


def _progress(message: str) -> None:
    sys.__stderr__.write(f"[trees {time.strftime('%H:%M:%S')}] {message}\n")


@pytest.fixture(scope="module")
def trees() -> Iterator[Trees]:
    pytest.importorskip("prefect")
    if shutil.which("uv", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("uv is not installed beside this Python: pip install -e '.[test]'")
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    with LocalPrefect(log=_progress) as prefect:
        work = prefect.workdir / "trees"
        shutil.copytree(PROGRAMS, work)
        ready = prefect.workdir / "ready"
        ready.mkdir()
        prefect.create_process_pool(POOL)
        deployments = {
            "uv": prefect.deploy(
                flow_name="tree-uv", entrypoint="uv_flow.py:uv_flow", directory=work / "uv_project", pool=POOL
            ),
            "prep": prefect.deploy(
                flow_name="tree-plain",
                entrypoint="plain_flow.py:plain_flow",
                directory=work,
                pool=POOL,
                name="prep",
                pull_steps_before=[{"prefect.deployments.steps.run_shell_script": {"script": "sleep 3600"}}],
            ),
            "grace": prefect.deploy(
                flow_name="tree-plain",
                entrypoint="plain_flow.py:plain_flow",
                directory=work,
                pool=POOL,
                name="grace",
            ),
        }
        runs = {
            name: prefect.create_run(deployment, {"ready_path": str(ready / name)})
            for name, deployment in deployments.items()
        }
        worker = prefect.start_worker(
            POOL,
            "trees",
            {
                "PREFECT_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
                "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "true",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "UV_NO_SYNC": "1",
                "UV_OFFLINE": "1",
                "UV_PROJECT_ENVIRONMENT": sys.prefix,
            },
        )
        serve = subprocess.Popen(
            [sys.executable, "serve_flow.py", "served"],
            cwd=work,
            env=prefect.child_env({"PYTHONUNBUFFERED": "1"}),
            stdout=(prefect.logs_dir / "serve.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            prefect.wait_until(
                lambda: _served_deployment(prefect) is not None, 120, "flow.serve() to register"
            )
            served = _served_deployment(prefect)
            assert served is not None
            runs["served"] = prefect.create_run(served, {"ready_path": str(ready / "served")})
            prefect.wait_until(
                lambda: all((ready / name).exists() for name in ("uv", "grace", "served")),
                240,
                "the uv, grace and served runs to reach their blocking line",
            )
            prefect.wait_until(
                lambda: len(prefect.run_processes(runs["prep"])) >= 2,
                120,
                "the prep run's pull step to start",
            )
            _kill_after_heartbeat(prefect, worker)
            killed_at = time.monotonic()
            prefect.kill_run_processes(runs["grace"])
            for name in ("uv", "prep", "grace"):
                prefect.cancel_run(runs[name])
            _progress("worker killed right after a heartbeat; uv, prep and grace cancelled")
            yield Trees(prefect, work, runs, worker, serve, killed_at)
        finally:
            with_group = os.getpgid(serve.pid) if serve.poll() is None else None
            if with_group is not None:
                os.killpg(with_group, 9)
            serve.wait(10)


def _served_deployment(prefect: LocalPrefect) -> str | None:
    from prefect.exceptions import ObjectNotFound

    try:
        return str(prefect.client.read_deployment_by_name("tree-served/served").id)
    except ObjectNotFound:
        return None


def _kill_after_heartbeat(prefect: LocalPrefect, worker: WorkerProcess) -> None:
    """SIGKILL the worker just after it heartbeats: the API says ONLINE for ~90 s more."""
    since = datetime.now(timezone.utc)

    def heartbeat_seen() -> bool:
        return any(
            w.name == worker.name and w.last_heartbeat_time and w.last_heartbeat_time > since
            for w in prefect.workers_of_pool(POOL)
        )

    prefect.wait_until(heartbeat_seen, HEARTBEAT_SECONDS * 2 + 15, "a fresh worker heartbeat", interval=0.3)
    prefect.kill_worker(worker)


def _diagnose(trees: Trees, name: str, tmp_path: Path) -> dict[str, Any]:
    done = run_cli(
        "diagnose", trees.runs[name], "--format", "json", "--samples", "2", env=trees.env(tmp_path)
    )
    assert done.returncode == 1, done.stderr[-2000:]
    (entry,) = json.loads(done.stdout)["runs"]
    return dict(entry)


def _wait_final(prefect: LocalPrefect, run_id: str) -> None:
    prefect.wait_until(
        lambda: prefect.state_type(run_id) in FINAL and not prefect.run_processes(run_id),
        60,
        f"run {run_id} to end with no process left",
    )


def test_worker_killed_with_its_run_within_the_heartbeat_grace_is_infrastructure_gone(
    trees: Trees, tmp_path: Path
) -> None:
    assert trees.prefect.worker_status(trees.worker) == "ONLINE"
    entry = _diagnose(trees, "grace", tmp_path)
    verdict = entry["verdict"]
    assert verdict["cause"] == "infrastructure_gone", verdict["summary"]
    scanned_within = time.monotonic() - trees.killed_at
    # Still within the grace: the API says ONLINE, yet the run is not sent "elsewhere".
    assert trees.prefect.worker_status(trees.worker) == "ONLINE", f"scanned {scanned_within:.0f} s after"
    assert "elsewhere" not in verdict["summary"]
    carry_out(verdict["stop_now"], trees.env(tmp_path))
    _wait_final(trees.prefect, trees.runs["grace"])


def test_uv_launched_run_is_diagnosed_in_the_python_child_of_uv(trees: Trees, tmp_path: Path) -> None:
    entry = _diagnose(trees, "uv", tmp_path)
    verdict, processes = entry["verdict"], entry["target"]["processes"]
    launcher = next(p for p in processes if p["role"] == "launcher")
    engine = next(p for p in processes if p["role"] == "engine")
    assert str(launcher["pid"]) == trees.prefect.read_run(trees.runs["uv"]).infrastructure_pid
    assert Path(f"/proc/{launcher['pid']}/exe").resolve().name == "uv"
    assert engine["pid"] != launcher["pid"]
    assert verdict["cause"] == "signal_ignored", verdict["summary"]
    call = verdict["blocking_call"]
    deployed = trees.work / "uv_project" / "uv_flow.py"
    assert (call["kind"], call["filename"], call["line"]) == ("sleep", str(deployed), marker_line(deployed))
    assert call["pid"] == engine["pid"]
    carry_out(verdict["stop_now"], trees.env(tmp_path))
    _wait_final(trees.prefect, trees.runs["uv"])
    assert trees.prefect.state_type(trees.runs["uv"]) == "CANCELLED"


def test_run_still_in_its_pull_steps_names_the_step_process(trees: Trees, tmp_path: Path) -> None:
    pids = trees.prefect.run_processes(trees.runs["prep"])
    step = next(pid for pid in pids if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep")
    entry = _diagnose(trees, "prep", tmp_path)
    verdict = entry["verdict"]
    assert verdict["cause"] == "cancel_not_observed", verdict["summary"]
    assert "preparing its workspace" in verdict["summary"]
    call = verdict["blocking_call"]
    assert call["kind"] == "subprocess"
    assert call["resource"]["kind"] == "child" and call["resource"]["peer_pids"] == [step]
    assert any("run_shell_script" in entry_["what"] for entry_ in entry["timeline"])
    carry_out(verdict["stop_now"], trees.env(tmp_path))
    _wait_final(trees.prefect, trees.runs["prep"])


def test_served_run_is_found_through_its_runner_and_its_surviving_child_after_cancel(
    trees: Trees, tmp_path: Path
) -> None:
    prefect, run_id = trees.prefect, trees.runs["served"]
    child = int((prefect.workdir / "ready" / "served").read_text())
    # Running: the flow process is found although no process carries the run's id.
    running = _diagnose_any(trees, run_id, tmp_path)
    target = running["target"]
    assert target["found_by"] == "serve"
    engine = next(p for p in target["processes"] if p["role"] == "engine")
    assert "--multiprocessing-fork" in Path(f"/proc/{engine['pid']}/cmdline").read_text()
    assert child in [p["pid"] for p in target["processes"] if p["role"] == "child"]
    # Cancelled by its live Runner: the flow ends, the child it started does not.
    prefect.cancel_run(run_id)
    prefect.wait_for_state(run_id, ["CANCELLED"], timeout=90)
    assert Path(f"/proc/{child}").exists()
    scan = run_cli("scan", "--format", "json", "--samples", "2", env=trees.env(tmp_path))
    assert scan.returncode == 1, scan.stderr[-2000:]
    (entry,) = [r for r in json.loads(scan.stdout)["runs"] if r["flow_run"]["id"] == run_id]
    verdict = entry["verdict"]
    assert verdict["cause"] == "child_process_survives", verdict["summary"]
    assert [p["pid"] for p in entry["target"]["processes"]] == [child]
    assert any("flow.serve()" in line for line in verdict["evidence"])
    assert not any("process group (no start_new_session" in fix for fix in verdict["remediation"])
    carry_out(verdict["stop_now"], trees.env(tmp_path))
    prefect.wait_until(lambda: not Path(f"/proc/{child}").exists(), 30, f"the child {child} to be gone")


def _diagnose_any(trees: Trees, run_id: str, tmp_path: Path) -> dict[str, Any]:
    done = run_cli("diagnose", run_id, "--format", "json", "--samples", "2", env=trees.env(tmp_path))
    assert done.returncode in (0, 1), done.stderr[-2000:]
    (entry,) = json.loads(done.stdout)["runs"]
    return dict(entry)
