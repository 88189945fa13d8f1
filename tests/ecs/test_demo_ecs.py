"""`prefect-cancel-doctor demo --ecs`, end to end, as a user runs it.

GIVEN a Docker engine and moto installed, WHEN `demo --ecs -o json` runs (its own Prefect server,
moto's ECS API in server mode in its process, the tasks on this host as containers with the ECS
agent's labels), THEN every staged run is diagnosed as staged — a Fargate task not_attachable with
the execute-command line, an OOM-killed task infrastructure_gone, a task past its stopTimeout whose
flow is blocked in a C call signal_pending at its file:line, a task whose command runs no Runner
cancel_not_observed at its file:line — and nothing it started is left: containers, moto, the server.
Without moto it fails at once with one `error:` line naming the pip install command; `--ecs` with
another staging is a usage error.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.demo.catalog import marker_line
from prefect_cancel_doctor.demo.ecs_harness import (
    CLUSTER,
    ECS_SCENARIOS,
    INSTALL_COMMAND,
    TASK_ARN_LABEL,
)
from tests.helpers import clean_environ, run_cli


def _without_aws(**extra: str) -> dict[str, str]:
    """The user's environment with no Prefect or AWS setting (the demo brings its own)."""
    return {k: v for k, v in clean_environ(**extra).items() if not k.startswith("AWS_")}


def _listens(url: str) -> bool:
    host, port = re.match(r"https?://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) == 0


@pytest.mark.server
@pytest.mark.docker
def test_demo_ecs_diagnoses_every_staged_run_and_leaves_nothing_behind(
    docker_client: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    done = run_cli("demo", "--ecs", "-o", "json", env=_without_aws(PREFECT_HOME=str(tmp_path)), timeout=420)
    seconds = time.monotonic() - started

    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert "demo: 4 of 4 staged runs diagnosed as staged" in done.stderr, done.stderr[-4000:]
    assert "HTTP/1.1" not in done.stderr  # moto's web server keeps its request log to itself
    runs = json.loads(done.stdout)["runs"]
    by_task: dict[str, dict[str, Any]] = {}
    for entry in runs:
        task = entry["target"]["task"]
        assert entry["target"]["kind"] == "ecs" and task["cluster"] == CLUSTER, entry["target"]
        if task["on_fargate"]:
            by_task["ecs_oom" if task["last_status"] == "STOPPED" else "ecs_fargate"] = entry
        else:
            by_task["ecs_stop_timeout" if task["desired_status"] == "STOPPED" else "ecs_no_runner"] = entry
    assert sorted(by_task) == ["ecs_fargate", "ecs_no_runner", "ecs_oom", "ecs_stop_timeout"], runs

    fargate = by_task["ecs_fargate"]["verdict"]
    task_id = by_task["ecs_fargate"]["target"]["task"]["task_arn"].rsplit("/", 1)[-1]
    assert fargate["cause"] == "not_attachable", fargate
    assert "runs on Fargate" in fargate["summary"]
    assert (
        f"aws ecs execute-command --cluster {CLUSTER} --task {task_id} --container prefect"
        in (fargate["remediation"][0])
    )

    oom = by_task["ecs_oom"]["verdict"]
    assert oom["cause"] == "infrastructure_gone", oom
    assert "container prefect exited with code 137 (OutOfMemoryError" in oom["summary"], oom["summary"]

    for name in ("ecs_stop_timeout", "ecs_no_runner"):
        entry, scenario = by_task[name], ECS_SCENARIOS[name]
        verdict, call = entry["verdict"], entry["verdict"]["blocking_call"]
        assert scenario.path is not None and scenario.expected_kind is not None
        assert verdict["cause"] == scenario.expected_cause.value, verdict
        assert (call["kind"], Path(call["filename"]).name, call["line"]) == (
            scenario.expected_kind.value,
            scenario.file,
            marker_line(scenario.path),
        ), call
        assert "on this host (Docker container" in entry["target"]["description"]
        assert "prefect.engine" in entry["target"]["container"]["command"], entry["target"]["container"]
    assert any("no Prefect Runner" in e for e in by_task["ecs_no_runner"]["verdict"]["evidence"])
    assert any(
        "past its container's stopTimeout of 5 s: ECS's SIGKILL should have ended it" in e
        for e in by_task["ecs_stop_timeout"]["verdict"]["evidence"]
    ), by_task["ecs_stop_timeout"]["verdict"]["evidence"]

    # Nothing is left: the tasks' containers, moto, the server and its process.
    for entry in by_task.values():
        arn = entry["target"]["task"]["task_arn"]
        assert not docker_client.containers(filters={"label": [f"{TASK_ARN_LABEL}={arn}"]}), arn
    moto = re.search(r"moto's ECS API \(server mode\) at (http://\S+),", done.stderr)
    server = re.search(r"server: starting on (http://\S+) \(pid (\d+)\)", done.stderr)
    assert moto and server, done.stderr[-3000:]
    assert not _listens(moto.group(1)) and not _listens(server.group(1))
    assert not Path(f"/proc/{server.group(2)}").exists()
    assert seconds < 240, seconds


def test_demo_ecs_without_moto_is_one_error_line_naming_the_install(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "moto"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'moto'\")\n")
    env = _without_aws(PREFECT_HOME=str(tmp_path / "home"), PYTHONPATH=str(shim.parent))
    env.pop("COLUMNS", None)  # the narrowest terminal: the error line is still one line

    done = run_cli("demo", "--ecs", env=env, timeout=60)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert INSTALL_COMMAND in lines[0] and "moto" in lines[0], lines[0]  # and no `demo:` line: nothing staged


def test_demo_stagings_are_exclusive(tmp_path: Path) -> None:
    for flags in (("--ecs", "--docker"), ("--ecs", "--kubernetes"), ("--docker", "--kubernetes")):
        done = run_cli("demo", *flags, env=_without_aws(PREFECT_HOME=str(tmp_path)))
        assert done.returncode == 2, (flags, done.stderr)
        assert (
            "--docker, --kubernetes and --ecs stage the runs in different places: choose one" in done.stderr
        )
        assert "Traceback" not in done.stderr
