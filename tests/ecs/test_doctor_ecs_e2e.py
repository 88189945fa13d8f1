"""The doctor end to end on runs whose tasks are moto's ECS tasks, through boto3's endpoint setting.

GIVEN a real Prefect server, moto's ECS API in server mode, and Cancelling runs whose
`infrastructure_pid` is prefect-aws's "<cluster>::<task ARN>" of: a task OOM-killed, a task whose
essential container exited 1, a Fargate task still RUNNING (no ECS Exec), a task RUNNING past its
stopTimeout after StopTask, and an EC2 task on another container instance, WHEN one `scan -o json`
runs, THEN each verdict says so (infrastructure_gone naming the stop; not_attachable with the
execute-command line, or the EC2 instance to run the doctor on), and the scan made one
DescribeTasks call for the cluster. Without credentials, or with an identity IAM denies, the
verdict is a clear not_attachable, no traceback.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.ecs.conftest import CLUSTER, EcsPrefect, MotoEcs
from tests.helpers import run_cli

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def scanned(moto_ecs: MotoEcs, ecs_prefect: EcsPrefect) -> dict[str, Any]:
    runs = {
        "oom": ecs_prefect.cancelling_run(moto_ecs),
        "exited": ecs_prefect.cancelling_run(moto_ecs),
        "fargate": ecs_prefect.cancelling_run(moto_ecs),
        "stopping": ecs_prefect.cancelling_run(moto_ecs, execute=True),
        "ec2": ecs_prefect.cancelling_run(moto_ecs, launch_type="EC2"),
    }
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
    assert (
        f"aws ecs execute-command --cluster {CLUSTER} --task {task_id} --container prefect --interactive "
        '--command "py-spy dump --subprocesses --pid 1"'
    ) in verdict["summary"]
    assert "enableExecuteCommand" in verdict["summary"] and "SYS_PTRACE" in verdict["summary"]
    assert any(
        "lastStatus RUNNING, desiredStatus RUNNING, launch type Fargate" in e for e in verdict["evidence"]
    )


def test_a_task_running_past_its_stop_timeout_says_so(scanned: dict[str, Any]) -> None:
    verdict = scanned["by_name"]["stopping"]["verdict"]

    assert verdict["cause"] == "not_attachable", verdict
    assert "enableExecuteCommand" not in verdict["summary"]  # started with ECS Exec
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


def test_inspect_an_ecs_task_by_cluster_and_id(scanned: dict[str, Any], moto_ecs: MotoEcs) -> None:
    task_id = scanned["arns"]["fargate"].rsplit("/", 1)[-1]
    done = run_cli("inspect", "--ecs-task", f"{CLUSTER}/{task_id}", "-o", "json", env=moto_ecs.env())

    assert "Traceback" not in done.stderr
    verdict = json.loads(done.stdout)["runs"][0]["verdict"]
    assert verdict["cause"] == "not_attachable"
    assert "aws ecs execute-command" in verdict["summary"]

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
    iam.create_user(UserName="doctor-without-ecs")
    key = iam.create_access_key(UserName="doctor-without-ecs")["AccessKey"]
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
