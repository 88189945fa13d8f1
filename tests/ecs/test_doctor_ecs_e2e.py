"""The doctor end to end on runs whose tasks are moto's ECS tasks, through boto3's endpoint setting.

GIVEN a real Prefect server, moto's ECS API in server mode, and Cancelling runs whose
`infrastructure_pid` is prefect-aws's "<cluster>::<task ARN>" of: a task OOM-killed, a task whose
essential container exited 1, a Fargate task still RUNNING (no ECS Exec), a task RUNNING past its
stopTimeout after StopTask, and an EC2 task on another container instance, WHEN one `scan -o json`
runs, THEN each verdict says so (infrastructure_gone naming the stop; not_attachable with the
execute-command line, or the EC2 instance to run the doctor on), and the scan made one
DescribeTasks call for the cluster. Without credentials, or with an identity IAM denies, the
verdict is a clear not_attachable, no traceback. A real prefect-aws ECS worker submits a run to moto
and the doctor reads what it recorded; with Docker, a task on this host (the ECS agent's labels) is
sampled and ended through the Docker paths.
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


STUCK_FLOW = """import time

from prefect import flow


@flow
def etl() -> None:
    print("ready", flush=True)
    time.sleep(600)  # BLOCKING
"""


@pytest.mark.docker
def test_a_task_on_this_ec2_host_is_found_by_its_agent_labels_and_sampled(
    moto_ecs: MotoEcs, ecs_prefect: EcsPrefect, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """GIVEN an EC2 task whose flow container runs on this host's Docker engine with the ECS agent's
    labels, its command `python -m prefect.engine` (no Runner) against the real server, WHEN its run is
    cancelled and diagnosed, THEN the ECS kind finds the container, samples it through the Docker
    paths: cancel_not_observed, a sleep at the flow's marked line, the verdict saying it is an ECS task
    on this host and ending it with `aws ecs stop-task`; `resolve` ends it (the engine's SIGTERM by
    its host PID) and marks the run Cancelled."""
    import os
    import sys
    import uuid
    from pathlib import Path

    from prefect_cancel_doctor.demo.docker_harness import OWNER_LABEL, build_image, host_mounts
    from tests.ecs.conftest import CLUSTER

    flows = tmp_path_factory.mktemp("ecs-ec2-flows")
    Path(flows, "stuck.py").write_text(STUCK_FLOW)
    line = STUCK_FLOW.splitlines().index("    time.sleep(600)  # BLOCKING") + 1
    deployment = ecs_prefect.prefect.deploy(
        flow_name="etl-on-ec2", entrypoint="stuck.py:etl", directory=flows, pool="ecs", name="ec2"
    )
    run_id = ecs_prefect.prefect.create_run(deployment, {})
    arn = moto_ecs.run_task(run_id, launch_type="EC2")
    ecs_prefect.prefect.client.update_flow_run(uuid.UUID(run_id), infrastructure_pid=f"{CLUSTER}::{arn}")
    ecs_prefect.prefect.propose_pending(run_id)
    owner = f"ecs-{uuid.uuid4().hex[:8]}"
    image = build_image(docker_client, owner, owner)
    container = docker_client.create(
        {
            "Image": image,
            "Cmd": [f"{sys.prefix}/bin/python", "-m", "prefect.engine"],
            "Env": [
                f"PREFECT_API_URL={ecs_prefect.api_url}",
                f"PREFECT__FLOW_RUN_ID={run_id}",
                "PREFECT_HOME=/tmp/prefect-home",
                "PYTHONUNBUFFERED=1",
            ],
            "Labels": {
                "com.amazonaws.ecs.task-arn": arn,
                "com.amazonaws.ecs.container-name": "prefect",
                "com.amazonaws.ecs.cluster": CLUSTER,
                "com.amazonaws.ecs.task-definition-family": "prefect",
                OWNER_LABEL: owner,
            },
            "HostConfig": {"NetworkMode": "host", "Binds": host_mounts([flows]), "AutoRemove": False},
        },
        name=f"ecs-agent-{owner}",
    )
    try:
        docker_client.start(container)
        deadline = time.monotonic() + 240  # a loaded 2-core machine: Prefect imports slowly
        while b"ready" not in docker_client.logs(container)[0]:
            out, err = docker_client.logs(container)
            assert time.monotonic() < deadline, (out + err).decode(errors="replace")[-3000:]
            assert docker_client.inspect(container).running, (out + err).decode(errors="replace")[-3000:]
            time.sleep(0.3)
        assert ecs_prefect.prefect.cancel_run(run_id) == "CANCELLING"
        docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        verdict_entry = json.loads(
            run_cli(
                "diagnose", run_id, "-o", "json", "--no-native",
                env=moto_ecs.env(PREFECT_API_URL=ecs_prefect.api_url, DOCKER_HOST=docker_host),
            ).stdout
        )["runs"][0]  # fmt: skip
        resolved = run_cli(
            "resolve", run_id, "--yes", "--grace", "5",
            env=moto_ecs.env(
                PREFECT_API_URL=ecs_prefect.api_url,
                DOCKER_HOST=docker_host,
                XDG_STATE_HOME=str(flows / "state"),
            ),
        )  # fmt: skip
        assert resolved.returncode == 0, resolved.stdout[-2000:] + resolved.stderr[-2000:]
        assert not docker_client.inspect(container).running
        assert ecs_prefect.prefect.state_type(run_id) == "CANCELLED"
        actions = (flows / "state" / "prefect-cancel-doctor" / "actions.jsonl").read_text()
        assert "SIGTERM" in actions and run_id in actions
    finally:
        docker_client.remove(container)
        from prefect_cancel_doctor.demo.docker_harness import IMAGE_REPOSITORY

        docker_client.remove_image(f"{IMAGE_REPOSITORY}:{owner}")
    verdict, target = verdict_entry["verdict"], verdict_entry["target"]
    assert target["kind"] == "ecs"
    assert f"on this host (Docker container {container[:12]})" in target["description"]
    assert verdict["cause"] == "cancel_not_observed", verdict
    call = verdict["blocking_call"]
    assert (call["kind"], Path(call["filename"]).name, call["line"]) == ("sleep", "stuck.py", line)
    assert any(
        "runs on this host: its container prefect is Docker container" in e for e in verdict["evidence"]
    )
    assert verdict["stop_now"][0].startswith(f"aws ecs stop-task --cluster {CLUSTER} --task {arn}")


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
