"""A real prefect-kubernetes worker pointed at the fixture API server, then the doctor on its run.

GIVEN a real `prefect worker start --type kubernetes` (prefect-kubernetes 0.8.0,
its observer off: it watches, which the fixture does not serve), a work pool with
the worker's own default job template, and a deployment whose job command runs
the engine without a Runner, WHEN a run is submitted and cancelled, THEN the
worker created the Job through the fixture (its only call), recorded
`infrastructure_pid` = `<namespace>:<job>`, set its own environment in the pod
(PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule with backoffLimit 0), and
the doctor diagnoses the run in both attach modes: `cancel_not_observed`, kind
`sleep`, at the flow's file:line.

prefect-kubernetes is not in the test extra (it requires prefect >= 3.8.4, which
the oldest-Prefect compatibility test installs against): it is installed, pinned
and without dependencies, into a virtualenv layered over this one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.clients.docker_api import DockerClient
from tests.helpers import clean_environ, run_cli
from tests.kubernetes.conftest import DEBUG_IMAGE, POD_IMAGE, KubeImages, progress, unavailable

pytestmark = [pytest.mark.server, pytest.mark.docker]

#: prefect-kubernetes and what it needs beyond this environment, pinned.
OVERLAY = (
    "prefect-kubernetes==0.8.0",
    "kubernetes-asyncio==36.1.0",
    "kopf==1.45.2",
    "aiohttp==3.14.5",
    "aiohappyeyeballs==2.7.1",
    "aiosignal==1.4.0",
    "frozenlist==1.8.0",
    "multidict==7.2.1",
    "yarl==1.25.1",
    "propcache==0.5.4",
    "iso8601==2.1.0",
    "tenacity==9.2.1",
)
NAMESPACE = "pcd-flows"
#: The worker's own default base job template, as `prefect work-pool create --type kubernetes` uses it.
TEMPLATE = (
    "import json; from prefect_kubernetes.worker import KubernetesWorker; "
    "print(json.dumps(KubernetesWorker.get_default_base_job_template()))"
)


@pytest.fixture(scope="module")
def worker_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python that sees this environment's packages plus prefect-kubernetes."""
    overlay = tmp_path_factory.mktemp("pk-overlay")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(overlay)], check=True, timeout=120)
    python = overlay / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "pcd-main-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", *OVERLAY],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        unavailable(f"cannot install prefect-kubernetes: {done.stderr[-500:]}")
    return str(python)


@pytest.fixture(scope="module")
def worker_run(
    worker_python: str, kube_docker: DockerClient, kube_images: KubeImages
) -> Iterator[dict[str, Any]]:
    from prefect.client.schemas.actions import WorkPoolCreate

    from prefect_cancel_doctor.demo.docker_harness import DOCKER_SCENARIO_DIR
    from prefect_cancel_doctor.demo.harness import LocalPrefect
    from prefect_cancel_doctor.demo.kube_apiserver import Policy, fake_cluster

    token = uuid.uuid4().hex
    with LocalPrefect(log=progress) as harness:
        flows, ready = harness.workdir / "flows", harness.workdir / "ready"
        flows.mkdir()
        ready.mkdir(mode=0o777)
        shutil.copy2(DOCKER_SCENARIO_DIR / "stuck_docker_no_runner.py", flows)
        with fake_cluster(
            kube_docker,
            images={POD_IMAGE: kube_images.pod, DEBUG_IMAGE: kube_images.debug},
            host_mounts=[*kube_images.mounts, f"{flows}:{flows}:ro", f"{ready}:{ready}"],
            owner=kube_images.owner,
            policy=Policy(users={token: "prefect-worker"}),
            tls=True,
        ) as api:
            api.cluster.ensure_namespace(NAMESPACE)
            kubeconfig = api.kubeconfig(harness.workdir / "kubeconfig", token=token, namespace=NAMESPACE)
            template = json.loads(
                subprocess.run(
                    [worker_python, "-c", TEMPLATE], capture_output=True, text=True, check=True, timeout=120
                ).stdout
            )
            harness.client.create_work_pool(
                WorkPoolCreate(name="pcd-real-k8s", type="kubernetes", base_job_template=template)
            )
            flow_id = harness.client.create_flow_from_name("stuck-docker-no-runner")
            deployment = harness.client.create_deployment(
                flow_id=flow_id,
                name="real-worker",
                work_pool_name="pcd-real-k8s",
                entrypoint="stuck_docker_no_runner.py:no_runner_flow",
                path=str(flows),
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(flows)}}],
                job_variables={
                    "image": POD_IMAGE,
                    "namespace": NAMESPACE,
                    "image_pull_policy": "Never",
                    "command": "python -m prefect.engine",
                    "env": {"PREFECT_HOME": "/tmp/prefect-home", "PYTHONUNBUFFERED": "1"},
                },
            )
            ready_path = ready / "run"
            run_id = harness.create_run(str(deployment), {"ready_path": str(ready_path)})
            env = harness.child_env(
                {
                    "KUBECONFIG": str(kubeconfig),
                    "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                    "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED": "false",
                    "PREFECT_WORKER_QUERY_SECONDS": "2",
                }
            )
            log_path = harness.workdir / "worker.log"
            with log_path.open("wb") as log:
                worker = subprocess.Popen(
                    [worker_python, "-m", "prefect", "worker", "start", "--pool", "pcd-real-k8s",
                     "--type", "kubernetes", "--name", "pcd-real-k8s-worker"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            try:
                harness.wait_until(
                    lambda: ready_path.exists() and harness.state_type(run_id) == "RUNNING",
                    240,
                    lambda: f"the run to be RUNNING; worker log:\n{log_path.read_text()[-3000:]}",
                )
                harness.cancel_run(run_id)
                yield {
                    "run": harness.read_run(run_id),
                    "api": api,
                    "env": {"PREFECT_API_URL": harness.api_url, "KUBECONFIG": str(kubeconfig),
                            "PCD_KUBE_DEBUG_IMAGE": DEBUG_IMAGE},
                    "file": str(flows / "stuck_docker_no_runner.py"),
                    "worker_log": log_path,
                }  # fmt: skip
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)


def test_the_worker_creates_the_job_and_records_namespace_and_job(worker_run: dict[str, Any]) -> None:
    api, run = worker_run["api"], worker_run["run"]
    calls = [(method, path) for method, path, _, _ in api.requests if path.startswith("/api")]
    jobs = list(api.cluster.jobs)
    pods = list(api.cluster.pods.values())

    assert calls == [("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")]
    assert len(jobs) == 1 and len(pods) == 1
    assert run.infrastructure_pid == f"{jobs[0][0]}:{jobs[0][1]}"
    container = pods[0].document["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["name"] == "prefect-job" and container["args"] == ["python", "-m", "prefect.engine"]
    assert env["PREFECT__FLOW_RUN_ID"] == str(run.id)
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"  # backoffLimit 0


@pytest.mark.parametrize("mode", ["node", "ephemeral"])
def test_the_doctor_diagnoses_the_workers_run(worker_run: dict[str, Any], mode: str) -> None:
    time.sleep(1)  # the cancel is in; nothing in the pod acts on it
    result = run_cli(
        "scan", "--format", "json", "--samples", "2",
        env=clean_environ(**worker_run["env"], PCD_KUBE_ATTACH=mode), timeout=300,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    entry = json.loads(result.stdout)["runs"][0]
    verdict = entry["verdict"]
    assert verdict["cause"] == "cancel_not_observed", verdict["summary"]
    call = verdict["blocking_call"]
    assert (call["kind"], call["filename"], call["line"]) == ("sleep", worker_run["file"], 21)
    assert entry["target"]["pod"]["attach"] == mode
    # The worker set the Runner's SIGTERM behaviour, but this job's command runs no Runner: no such line.
    assert any("no Prefect Runner" in e for e in verdict["evidence"]), verdict["evidence"]
    assert not any("SIGTERM_BEHAVIOR" in e for e in verdict["evidence"]), verdict["evidence"]
