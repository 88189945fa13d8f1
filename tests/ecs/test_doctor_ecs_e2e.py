"""The doctor end to end on runs whose tasks are moto's ECS tasks, through boto3's endpoint setting.

GIVEN a real Prefect server, moto's ECS API in server mode, and Cancelling runs whose
`infrastructure_pid` is prefect-aws's "<cluster>::<task ARN>" of: a task OOM-killed, a task whose
essential container exited 1, a Fargate task still RUNNING (no ECS Exec), a task RUNNING past its
stopTimeout after StopTask, and an EC2 task on another container instance, WHEN one `scan -o json`
runs, THEN each verdict says so (infrastructure_gone naming the stop; not_attachable with the
execute-command line, or the EC2 instance to run the doctor on), and the scan made one
DescribeTasks call for the cluster. Without credentials, or with an identity IAM denies, the
verdict is a clear not_attachable, no traceback. A real prefect-aws ECS worker submits a run to moto
and the doctor reads what it recorded. With Docker, tasks on this host (real containers with the ECS
agent's labels, running real flows with no Runner, staged by `demo/ecs_harness.py` as `demo --ecs`
stages them) are sampled through the Docker paths: a flow blocked in a C call (its file:line), a task
RUNNING past its stopTimeout after StopTask (its SIGTERM pending), one ended by the engine's SIGTERM
and one `resolve` ends with StopTask, then `docker kill`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.demo.ecs_harness import (
    CLUSTER,
    WORKER_STOP_REASON,
    EcsDemoEnvironment,
    MotoEcs,
    StuckTaskRun,
)
from tests.ecs.conftest import EcsPrefect, progress
from tests.helpers import clean_environ, run_cli

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def scanned(moto_ecs: MotoEcs, ecs_prefect: EcsPrefect) -> dict[str, Any]:
    runs = {
        "oom": ecs_prefect.cancelling_run(moto_ecs),
        "exited": ecs_prefect.cancelling_run(moto_ecs),
        "fargate": ecs_prefect.cancelling_run(moto_ecs),
        "stopping": ecs_prefect.cancelling_run(moto_ecs, execute=True),
        "ec2": ecs_prefect.cancelling_run(moto_ecs, launch_type="EC2"),
        "orphan": ecs_prefect.cancelling_run(moto_ecs),
    }
    ecs_prefect.prefect.force_state(runs["orphan"][0], "CANCELLED", "Flow run cancellation timed out")
    moto_ecs.stop_task(
        runs["oom"][1],
        code="EssentialContainerExited",
        reason="Essential container in task exited",
        exit_code=137,
        why="OutOfMemoryError: Container killed due to memory usage",
    )
    moto_ecs.stop_task(
        runs["exited"][1],
        code="EssentialContainerExited",
        reason="Essential container in task exited",
        exit_code=1,
        why=None,
    )
    moto_ecs.stopping(runs["stopping"][1], minutes_ago=10)
    moto_ecs.describe_calls.clear()
    started = time.monotonic()
    done = run_cli(
        "scan", "-o", "json", "--no-native", "--samples", "1",
        env=moto_ecs.env(PREFECT_API_URL=ecs_prefect.api_url),
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    document = json.loads(done.stdout)
    verdicts = {entry["flow_run"]["id"]: entry for entry in document["runs"]}
    return {
        "by_name": {name: verdicts[run_id] for name, (run_id, _) in runs.items()},
        "arns": {name: arn for name, (_, arn) in runs.items()},
        "calls": list(moto_ecs.describe_calls),
        "seconds": seconds,
    }


def test_one_describe_tasks_call_for_the_cluster(scanned: dict[str, Any]) -> None:
    assert scanned["calls"] == [CLUSTER], scanned["calls"]
    for entry in scanned["by_name"].values():
        assert entry["target"]["kind"] == "ecs"


def test_an_oom_killed_task_with_the_run_cancelling_is_infrastructure_gone(scanned: dict[str, Any]) -> None:
    verdict = scanned["by_name"]["oom"]["verdict"]
    task_id = scanned["arns"]["oom"].rsplit("/", 1)[-1]

    assert verdict["cause"] == "infrastructure_gone", verdict
    assert f"ECS task {CLUSTER}/{task_id} stopped" in verdict["summary"]
    assert (
        "stopped because an essential container exited (Essential container in task exited)"
        in verdict["summary"]
    )
    assert "container prefect exited with code 137 (OutOfMemoryError" in verdict["summary"]
    assert any("raise the task's memory" in fix for fix in verdict["remediation"])


def test_an_essential_container_that_exited_is_infrastructure_gone(scanned: dict[str, Any]) -> None:
    verdict = scanned["by_name"]["exited"]["verdict"]

    assert verdict["cause"] == "infrastructure_gone", verdict
    assert "container prefect exited with code 1" in verdict["summary"]
    assert verdict["stop_now"][-1].startswith("prefect api POST /flow_runs/")  # only the state is left


def test_a_running_fargate_task_is_not_attachable_with_the_execute_command_line(
    scanned: dict[str, Any],
) -> None:
    verdict = scanned["by_name"]["fargate"]["verdict"]
    task_id = scanned["arns"]["fargate"].rsplit("/", 1)[-1]

    assert verdict["cause"] == "not_attachable", verdict
    assert "runs on Fargate (no host to run the doctor on)" in verdict["summary"]
    first, *needs = verdict["remediation"]
    assert (
        f"aws ecs execute-command --cluster {CLUSTER} --task {task_id} --container prefect --interactive "
        '--command "py-spy dump --subprocesses --pid 1"'
    ) in first
    assert any("enableExecuteCommand" in n for n in needs) and any("SYS_PTRACE" in n for n in needs)
    assert verdict["short_fix"] == "ECS Exec: py-spy in the task"
    assert any(
        "lastStatus RUNNING, desiredStatus RUNNING, launch type Fargate" in e for e in verdict["evidence"]
    )


def test_a_task_running_past_its_stop_timeout_says_so(scanned: dict[str, Any]) -> None:
    verdict = scanned["by_name"]["stopping"]["verdict"]

    assert verdict["cause"] == "not_attachable", verdict
    assert not any("enableExecuteCommand" in fix for fix in verdict["remediation"])  # started with ECS Exec
    assert any(
        "past its container's stopTimeout of 45 s: ECS's SIGKILL should have ended it and did not" in line
        for line in verdict["evidence"]
    ), verdict["evidence"]


def test_an_ec2_task_elsewhere_names_the_instance_to_run_the_doctor_on(
    scanned: dict[str, Any], moto_ecs: MotoEcs
) -> None:
    verdict = scanned["by_name"]["ec2"]["verdict"]

    assert verdict["cause"] == "not_attachable", verdict
    assert (
        f"runs on EC2 container instance {moto_ecs.ec2_instance_id}, not on this host" in verdict["summary"]
    )
    assert verdict["remediation"][0].startswith(
        f"run the doctor on EC2 container instance {moto_ecs.ec2_instance_id}"
    )
    assert "aws ecs execute-command" in verdict["remediation"][1]


def test_a_cancelled_run_whose_task_still_runs_is_reported_as_an_orphan(scanned: dict[str, Any]) -> None:
    verdict = scanned["by_name"]["orphan"]["verdict"]
    arn = scanned["arns"]["orphan"]

    assert scanned["by_name"]["orphan"]["flow_run"]["state_type"] == "CANCELLED"
    assert verdict["cause"] == "not_attachable", verdict
    assert "the run is Cancelled but its ECS task" in verdict["summary"]
    assert "still runs (an orphan" in verdict["summary"]
    assert f"aws ecs stop-task --cluster {CLUSTER} --task {arn}" in verdict["summary"]


def test_inspect_an_ecs_task_by_cluster_and_id(scanned: dict[str, Any], moto_ecs: MotoEcs) -> None:
    task_id = scanned["arns"]["fargate"].rsplit("/", 1)[-1]
    done = run_cli("inspect", "--ecs-task", f"{CLUSTER}/{task_id}", "-o", "json", env=moto_ecs.env())

    assert "Traceback" not in done.stderr
    verdict = json.loads(done.stdout)["runs"][0]["verdict"]
    assert verdict["cause"] == "not_attachable"
    assert "runs on Fargate" in verdict["summary"]
    assert "aws ecs execute-command" in verdict["remediation"][0]

    stopped = scanned["arns"]["oom"].rsplit("/", 1)[-1]
    gone = run_cli("inspect", "--ecs-task", f"{CLUSTER}/{stopped}", env=moto_ecs.env())
    assert gone.returncode == 2 and "OutOfMemoryError" in gone.stderr and "Traceback" not in gone.stderr


def _diagnose(ecs_prefect: EcsPrefect, run_id: str, env: dict[str, str]) -> dict[str, Any]:
    done = run_cli("diagnose", run_id, "-o", "json", env={**env, "PREFECT_API_URL": ecs_prefect.api_url})
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 1, done.stderr[-3000:]
    verdict: dict[str, Any] = json.loads(done.stdout)["runs"][0]["verdict"]
    return verdict


def test_missing_credentials_are_a_clear_not_attachable(moto_ecs: MotoEcs, ecs_prefect: EcsPrefect) -> None:
    run_id, _ = ecs_prefect.cancelling_run(moto_ecs)
    env = {k: v for k, v in moto_ecs.env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}

    verdict = _diagnose(ecs_prefect, run_id, env)

    assert verdict["cause"] == "not_attachable", verdict
    assert "the ECS API could not be read: no AWS credentials for ecs:DescribeTasks" in verdict["summary"]
    assert "AWS_PROFILE" in verdict["summary"]


def test_an_identity_iam_denies_is_a_clear_not_attachable(moto_ecs: MotoEcs, ecs_prefect: EcsPrefect) -> None:
    from moto import settings

    run_id, _ = ecs_prefect.cancelling_run(moto_ecs)
    iam = moto_ecs.client("iam")
    user = f"doctor-without-ecs-{run_id[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # moto enforces IAM from now on
    try:
        env = moto_ecs.env(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        verdict = _diagnose(ecs_prefect, run_id, env)
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = previous

    assert verdict["cause"] == "not_attachable", verdict
    assert "access denied to ecs:DescribeTasks" in verdict["summary"]
    assert "grant the doctor's identity ecs:DescribeTasks, ecs:DescribeTaskDefinition" in verdict["summary"]


# -- tasks on this EC2 host: the ECS agent's labelled containers, running real flows -------------

#: The harness's scenarios staged here (`demo --ecs` stages some of the same).
ON_HOST = ("ecs_c_call", "ecs_stop_timeout", "ecs_no_runner", "ecs_resolve")


@pytest.fixture(scope="module")
def on_host_environment(
    moto_ecs: MotoEcs, ecs_prefect: EcsPrefect, docker_client: Any
) -> Iterator[EcsDemoEnvironment]:
    """The on-host scenarios, staged together (their containers start at once) on the session's
    server and moto."""
    from prefect_cancel_doctor.demo.ecs_harness import ecs_demo_environment

    with ecs_demo_environment(
        ON_HOST, harness=ecs_prefect.prefect, moto=moto_ecs, client=docker_client, log=progress
    ) as staged:
        progress("ECS on-host timings (s): " + ", ".join(f"{k}={v}" for k, v in staged.timings.items()))
        yield staged


@pytest.fixture(scope="module")
def on_host(on_host_environment: EcsDemoEnvironment) -> dict[str, StuckTaskRun]:
    return {run.scenario: run for run in on_host_environment.runs}


def _host_env(moto_ecs: MotoEcs, ecs_prefect: EcsPrefect, **extra: str) -> dict[str, str]:
    docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return moto_ecs.env(PREFECT_API_URL=ecs_prefect.api_url, DOCKER_HOST=docker_host, **extra)


def _diagnosed(run: StuckTaskRun, env: dict[str, str]) -> dict[str, Any]:
    done = run_cli("diagnose", run.run_id, "-o", "json", env=env)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    entry: dict[str, Any] = json.loads(done.stdout)["runs"][0]
    return entry


def _at_its_line(verdict: dict[str, Any], run: StuckTaskRun) -> None:
    call = verdict["blocking_call"]
    assert run.expected_location is not None and run.expected_kind is not None
    file, line = run.expected_location
    assert (call["kind"], call["filename"], call["line"]) == (run.expected_kind.value, file, line), call


def _on_this_host(entry: dict[str, Any], run: StuckTaskRun) -> None:
    assert run.container_id is not None
    assert entry["target"]["kind"] == "ecs"
    assert entry["target"]["description"] == (
        f"ECS task {CLUSTER}/{run.task_id} on this host (Docker container {run.container_id[:12]})"
    )
    assert any(
        f"runs on this host: its container prefect is Docker container {run.container_id[:12]}" in e
        for e in entry["verdict"]["evidence"]
    ), entry["verdict"]["evidence"]


def _task_facts(entry: dict[str, Any], run: StuckTaskRun, desired: str) -> dict[str, Any]:
    """The task as the JSON's target holds it (what ECS says, and its container on this host)."""
    task: dict[str, Any] = entry["target"]["task"]
    assert (task["cluster"], task["task_arn"], task["flow_run_id"]) == (CLUSTER, run.task_arn, run.run_id)
    assert (task["last_status"], task["desired_status"], task["launch_type"]) == ("RUNNING", desired, "EC2")
    assert (task["command"], task["stop_timeout"]) == (["python", "-m", "prefect.engine"], run.stop_timeout)
    assert task["local_container"] == run.container_id
    return task


def _runs_no_runner(verdict: dict[str, Any], run: StuckTaskRun) -> None:
    evidence = verdict["evidence"]
    assert any(
        f"ECS task {CLUSTER}/{run.task_id}: lastStatus RUNNING" in e and "launch type EC2" in e
        for e in evidence
    ), evidence
    # sampled here, the container itself says it (once): its command, and that no Runner runs in it
    runner = [e for e in evidence if "no Prefect Runner" in e or "without a Prefect Runner" in e]
    assert len(runner) == 1 and "python -m prefect.engine" in runner[0], evidence
    assert not any("container prefect: command" in e for e in evidence), evidence
    assert (
        sum("found by the ECS agent's labels" in e or "(the ECS agent's labels)" in e for e in evidence) == 1
    )


@pytest.mark.docker
def test_a_task_on_this_host_blocked_in_a_c_call_names_the_call(
    on_host: dict[str, StuckTaskRun], moto_ecs: MotoEcs, ecs_prefect: EcsPrefect
) -> None:
    """GIVEN an EC2 task whose flow container runs on this host (the ECS agent's labels), its command
    `python -m prefect.engine` (no Runner), its flow waiting in a C call (a SQLite busy wait), WHEN
    its run is cancelled and diagnosed, THEN: cancel_not_observed (no SIGTERM came; one would stay
    pending: signal_pending as the secondary finding), the call at the flow's line, the task's facts."""
    run = on_host["ecs_c_call"]

    entry = _diagnosed(run, _host_env(moto_ecs, ecs_prefect))

    verdict = entry["verdict"]
    assert verdict["cause"] == "cancel_not_observed", verdict
    assert [also["cause"] for also in verdict["also"]] == ["signal_pending"], verdict["also"]
    _at_its_line(verdict, run)
    _on_this_host(entry, run)
    _runs_no_runner(verdict, run)
    assert _task_facts(entry, run, desired="RUNNING")["stopping_at"] is None
    assert verdict["stop_now"][0].startswith(f"aws ecs stop-task --cluster {CLUSTER} --task {run.task_arn}")


@pytest.mark.docker
def test_demo_keep_lines_point_the_doctor_at_the_server_and_moto(
    on_host_environment: EcsDemoEnvironment, on_host: dict[str, StuckTaskRun]
) -> None:
    """GIVEN the ECS staging `demo --ecs --keep` leaves up, WHEN the doctor runs with only the export
    lines it prints (no other Prefect or AWS setting), THEN it reads the run's task from moto."""
    import shlex

    from prefect_cancel_doctor.demo.run import keep_lines

    exports = dict(
        shlex.split(line.strip())[1].split("=", 1)
        for line in keep_lines(on_host_environment)
        if line.strip().startswith("export ")
    )
    assert sorted(exports) == [
        "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL"
    ]  # fmt: skip
    env = {k: v for k, v in clean_environ(**exports).items() if not k.startswith("AWS_") or k in exports}
    run = on_host["ecs_c_call"]

    done = run_cli("diagnose", run.run_id, "-o", "json", "--samples", "1", env=env)

    assert done.returncode == 1, done.stderr[-3000:]
    entry = json.loads(done.stdout)["runs"][0]
    assert entry["target"]["task"]["task_arn"] == run.task_arn
    assert entry["verdict"]["cause"] == run.expected_cause.value, entry["verdict"]


@pytest.mark.docker
def test_a_task_running_past_its_stop_timeout_on_this_host(
    on_host: dict[str, StuckTaskRun], moto_ecs: MotoEcs, ecs_prefect: EcsPrefect
) -> None:
    """GIVEN a task on this host whose flow waits in a C call, its run cancelled, then StopTask
    (desiredStatus STOPPED, stoppingAt) whose SIGTERM the engine (PID 1) got, and the task still
    RUNNING past its definition's stopTimeout (5 s; no agent SIGKILLed it), WHEN diagnosed, THEN:
    signal_pending at the flow's line, a SIGTERM came, and the evidence says ECS was asked to stop
    it and it is past its stopTimeout."""
    run = on_host["ecs_stop_timeout"]
    task = moto_ecs.backend_task(run.task_arn)
    assert (task.last_status, task.desired_status) == ("RUNNING", "STOPPED")

    entry = _diagnosed(run, _host_env(moto_ecs, ecs_prefect))

    verdict = entry["verdict"]
    assert verdict["cause"] == "signal_pending", verdict
    _at_its_line(verdict, run)
    _on_this_host(entry, run)
    assert (verdict["delivery"]["sigterm"], verdict["delivery"]["absorbed_by"]) == ("delivered", "c_call")
    facts = _task_facts(entry, run, desired="STOPPED")
    assert (facts["stop_code"], facts["stopped_reason"]) == ("UserInitiated", WORKER_STOP_REASON)
    assert facts["stopping_at"] is not None
    assert any(
        e.startswith("ECS was asked to stop the task at ")
        and f"past its container's stopTimeout of {run.stop_timeout} s: ECS's SIGKILL should have ended it "
        "and did not"
        in e
        for e in verdict["evidence"]
    ), verdict["evidence"]


@pytest.mark.docker
def test_a_task_on_this_host_is_found_by_its_agent_labels_sampled_and_resolved(
    on_host: dict[str, StuckTaskRun], moto_ecs: MotoEcs, ecs_prefect: EcsPrefect, docker_client: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    """GIVEN an EC2 task whose flow container runs on this host's Docker engine with the ECS agent's
    labels, its command `python -m prefect.engine` (no Runner) against the real server, WHEN its run is
    cancelled and diagnosed, THEN the ECS kind finds the container, samples it through the Docker
    paths: cancel_not_observed, a sleep at the flow's marked line, the verdict saying it is an ECS task
    on this host and ending it with `aws ecs stop-task`; `resolve` ends it (the engine's SIGTERM by
    its host PID: no StopTask needed) and marks the run Cancelled."""
    run = on_host["ecs_no_runner"]
    env = _host_env(moto_ecs, ecs_prefect, XDG_STATE_HOME=str(tmp_path))

    entry = _diagnosed(run, env)
    resolved = run_cli("resolve", run.run_id, "--yes", "--grace", "5", env=env)

    verdict = entry["verdict"]
    assert verdict["cause"] == "cancel_not_observed", verdict
    _at_its_line(verdict, run)
    _on_this_host(entry, run)
    _runs_no_runner(verdict, run)
    _task_facts(entry, run, desired="RUNNING")
    assert verdict["stop_now"][0].startswith(f"aws ecs stop-task --cluster {CLUSTER} --task {run.task_arn}")
    assert resolved.returncode == 0, resolved.stdout[-2000:] + resolved.stderr[-2000:]
    assert run.container_id is not None and not docker_client.inspect(run.container_id).running
    assert ecs_prefect.prefect.state_type(run.run_id) == "CANCELLED"
    actions = (tmp_path / "prefect-cancel-doctor" / "actions.jsonl").read_text()
    assert "SIGTERM" in actions and run.run_id in actions
    assert "aws ecs stop-task" not in actions  # the engine's SIGTERM ended it within the grace
    assert moto_ecs.backend_task(run.task_arn).desired_status == "RUNNING"


@pytest.mark.docker
def test_resolve_calls_stop_task_then_docker_kills_a_task_that_holds_on(
    on_host: dict[str, StuckTaskRun], moto_ecs: MotoEcs, ecs_prefect: EcsPrefect, docker_client: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    """GIVEN a task on this host whose flow waits in a C call (so the engine's SIGTERM stays pending),
    its definition's stopTimeout 2 s, WHEN `resolve RUN --yes` runs, THEN it SIGTERMs the engine, calls
    StopTask on the ECS API (moto records desiredStatus STOPPED and the doctor's reason), and, as no ECS
    agent stops the container here, `docker kill`s it after the stopTimeout; the container is gone and
    the run Cancelled, each step in the action log."""
    from prefect_cancel_doctor.kinds.ecs.facts import STOP_REASON

    run = on_host["ecs_resolve"]
    assert run.container_id is not None and run.ready_path is not None
    env = _host_env(moto_ecs, ecs_prefect, XDG_STATE_HOME=str(tmp_path))

    started = time.monotonic()
    resolved = run_cli("resolve", run.run_id, "--yes", "--grace", "2", env=env)
    seconds = time.monotonic() - started

    assert resolved.returncode == 0, resolved.stdout[-3000:] + resolved.stderr[-3000:]
    assert "Traceback" not in resolved.stderr
    task = moto_ecs.backend_task(run.task_arn)
    assert (task.desired_status, task.stopped_reason) == ("STOPPED", STOP_REASON)
    assert Path(str(run.ready_path) + ".sigterm").exists()  # the engine got the SIGTERM, pending in C
    assert not docker_client.inspect(run.container_id).running
    assert ecs_prefect.prefect.state_type(run.run_id) == "CANCELLED"
    actions = [json.loads(line) for line in (tmp_path / "prefect-cancel-doctor" / "actions.jsonl").open()]
    steps = [a["signal"] for a in actions if a["run"] == run.run_id]
    assert steps == ["SIGTERM", "aws ecs stop-task", "docker kill", "set Cancelled"], actions
    assert seconds < 60, seconds  # grace 2 s, stopTimeout 2 s + the kill's wait


def test_a_run_submitted_by_a_real_prefect_aws_worker(
    moto_ecs: MotoEcs, ecs_prefect: EcsPrefect, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """GIVEN a real `prefect worker start --type ecs` (prefect-aws, its own default job template) on
    moto, WHEN it submits a run (EC2 launch type, on moto's container instance) and the started run
    is cancelled, THEN the doctor reads the task the worker recorded (`<cluster>::<task ARN>`) and its
    run request (the run's id in the container override, `prefect flow-run execute`): not_attachable,
    naming the EC2 instance to run the doctor on."""
    import importlib.util
    import os
    import subprocess
    import sys

    from tests.helpers import unavailable

    if importlib.util.find_spec("prefect_aws") is None:
        unavailable(
            "prefect-aws is not installed (pip install 'prefect-aws>=0.7.12'; it needs prefect>=3.8.4)"
        )
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect_aws.workers.ecs_worker import ECSWorker

    prefect = ecs_prefect.prefect
    pool = "ecs-real-worker"
    prefect.client.create_work_pool(
        WorkPoolCreate(name=pool, type="ecs", base_job_template=ECSWorker.get_default_base_job_template())
    )
    flow_id = prefect.client.create_flow_from_name("etl-on-ecs")
    deployment = prefect.client.create_deployment(
        flow_id=flow_id,
        name="ecs",
        work_pool_name=pool,
        entrypoint="flow.py:etl",
        job_variables={"cluster": CLUSTER, "launch_type": "EC2", "image": "prefecthq/prefect:3-latest"},
    )
    run_id = prefect.create_run(str(deployment), {})
    home = tmp_path_factory.mktemp("ecs-worker-home")
    env = moto_ecs.env(PREFECT_API_URL=ecs_prefect.api_url, PREFECT_HOME=str(home))
    env["AWS_DEFAULT_REGION"] = env["AWS_REGION"]
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "ecs", "--run-once"],
        env={**env, "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    raw = prefect.read_run(run_id).infrastructure_pid
    assert raw and "::" in raw, worker.stdout[-3000:] + worker.stderr[-3000:]
    cluster, arn = raw.split("::", 1)
    prefect.force_state(run_id, "RUNNING")  # its Runner started in the task
    assert prefect.cancel_run(run_id) == "CANCELLING"

    verdict = _diagnose(ecs_prefect, run_id, moto_ecs.env())

    assert cluster == CLUSTER and arn.startswith("arn:aws:ecs:")
    assert verdict["cause"] == "not_attachable", verdict
    assert f"runs on EC2 container instance {moto_ecs.ec2_instance_id}" in verdict["summary"]
    assert any("command `prefect flow-run execute`" in line for line in verdict["evidence"]), verdict


def test_the_health_report_says_where_each_ecs_run_lives(
    scanned: dict[str, Any], moto_ecs: MotoEcs, ecs_prefect: EcsPrefect
) -> None:
    done = run_cli(
        "report", "--since", "1h", "-o", "json", env=moto_ecs.env(PREFECT_API_URL=ecs_prefect.api_url)
    )

    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    stuck = {entry["flow_run"]["id"]: entry for entry in json.loads(done.stdout)["stuck"]}
    oom = stuck[scanned["by_name"]["oom"]["flow_run"]["id"]]
    fargate = stuck[scanned["by_name"]["fargate"]["flow_run"]["id"]]
    oom_id, fargate_id = (scanned["arns"][name].rsplit("/", 1)[-1] for name in ("oom", "fargate"))
    assert oom["location"] == f"ECS task {CLUSTER}/{oom_id} (stopped)"
    assert oom["verdict"]["cause"] == "infrastructure_gone"
    assert oom["target"]["task"]["stop_code"] == "EssentialContainerExited"
    assert fargate["location"] == f"ECS task {CLUSTER}/{fargate_id}"
    assert fargate["verdict"]["cause"] == "not_attachable"
    # the JSON lists the first 50 stuck runs unless --all-runs (the CLI's flag reaches the document)
    every = run_cli(
        "report", "--since", "1h", "-o", "json", "--no-sample", "--all-runs",
        env=moto_ecs.env(PREFECT_API_URL=ecs_prefect.api_url),
    )  # fmt: skip
    assert (json.loads(done.stdout)["listed"], json.loads(every.stdout)["listed"]) == (50, None)
