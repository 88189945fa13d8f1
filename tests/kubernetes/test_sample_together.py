"""Ephemeral containers of several pods, added together and waited on together, on the fixture API.

GIVEN pods of the fixture Kubernetes API (real Docker containers): two that run, one in a
namespace whose Pod Security forbids SYS_PTRACE, one Terminating, and a name no pod has,
WHEN `sample_pods` samples them in one call, THEN every ephemeral container is patched
before any pod is read again, the pods are read by one list of the namespace a poll (their
Jobs' label) and no pod on its own, the running pods are sampled, and each other pod gets
its own reason, as a pod sampled alone does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from prefect_cancel_doctor.clients.docker_api import DockerClient
from prefect_cancel_doctor.clients.kube_api import KubeClient, KubeError
from prefect_cancel_doctor.clients.kube_config import resolve_kube_connection
from prefect_cancel_doctor.demo.kube_apiserver import FakeApiServer, Policy, fake_cluster
from prefect_cancel_doctor.kinds.kubernetes.pod import PodRequest, sample_pods
from tests.kubernetes.conftest import DEBUG_IMAGE, POD_IMAGE, KubeImages
from tests.kubernetes.test_fixture_conformance import IGNORES_SIGTERM, api_kubeconfig, create_job

pytestmark = [pytest.mark.docker]

NAMESPACE = "pcd-together"
LOCKED = "pcd-together-locked"


@pytest.fixture(scope="module")
def api(kube_docker: DockerClient, kube_images: KubeImages) -> Iterator[FakeApiServer]:
    with fake_cluster(
        kube_docker,
        images={POD_IMAGE: kube_images.pod, DEBUG_IMAGE: kube_images.debug},
        host_mounts=kube_images.mounts,
        owner=kube_images.owner,
        policy=Policy(users={"admin-token": "admin"}),
    ) as server:
        server.cluster.ensure_namespace(NAMESPACE)
        server.cluster.ensure_namespace(LOCKED, {"pod-security.kubernetes.io/enforce": "baseline"})
        yield server


def test_all_patched_first_then_waited_on_together_with_each_pods_own_error(api: FakeApiServer) -> None:
    pods = {name: create_job(api, f"etl-{name}", NAMESPACE) for name in ("one", "two")}
    pods["locked"] = create_job(api, "etl-locked", LOCKED)
    pods["terminating"] = create_job(
        api, "etl-terminating", NAMESPACE, code=IGNORES_SIGTERM, terminationGracePeriodSeconds=300
    )
    api.cluster.delete_pod(NAMESPACE, pods["terminating"], None)
    requests = [
        PodRequest(NAMESPACE, pods["one"], "prefect-job", "etl-one"),
        PodRequest(LOCKED, pods["locked"], "prefect-job", "etl-locked"),
        PodRequest(NAMESPACE, pods["terminating"], "prefect-job", "etl-terminating"),
        PodRequest(NAMESPACE, "etl-gone-abcde", "prefect-job", "etl-gone"),
        PodRequest(NAMESPACE, pods["two"], "prefect-job", "etl-two"),
    ]
    said: list[str] = []
    first = len(api.requests)

    with KubeClient(resolve_kube_connection(str(api_kubeconfig(api)))) as client:
        outcomes = sample_pods(
            client, requests, image=DEBUG_IMAGE, samples=1, native=False,
            progress=lambda what, done, total: said.append(what),
        )  # fmt: skip

    one, locked, terminating, gone, two = outcomes
    for sampled in (one, two):
        assert not isinstance(sampled, KubeError), sampled
        sample, name, reused = sampled
        assert (name, reused) == ("pcd-doctor-prefect-job-1", False)
        assert sample.method == "ephemeral" and sample.processes
    assert isinstance(locked, KubeError) and "Pod Security admission refused" in str(locked)
    assert isinstance(terminating, KubeError) and "is Terminating" in str(terminating)
    assert isinstance(gone, KubeError) and str(gone) == f"pod {NAMESPACE}/etl-gone-abcde no longer exists"

    made: list[tuple[str, str, dict[str, str], Any]] = api.requests[first:]
    patches = [
        i for i, (method, path, query, _) in enumerate(made)
        if method == "PATCH" and path.endswith("/ephemeralcontainers") and query.get("dryRun") != "All"
    ]  # fmt: skip
    assert len(patches) == 2  # the locked pod's dry run was refused, the Terminating pod got none
    after = made[max(patches) + 1 :]
    assert max(patches) < min(i for i, r in enumerate(made) if r[1].endswith("/log"))
    reads = [(path, query) for method, path, query, _ in after if method == "GET" and "/log" not in path]
    assert reads and all(path.endswith("/pods") for path, _ in reads), reads  # no GET of one pod
    # the Jobs of the pods still waited on (one's round may be read before the other's)
    assert {q.get("labelSelector") for _, q in reads} <= {
        "job-name in (etl-one,etl-two)",
        "job-name in (etl-one)",
        "job-name in (etl-two)",
    }
    assert reads[0][1].get("labelSelector") == "job-name in (etl-one,etl-two)"
    assert said[0] == "adding ephemeral containers to 5 pod(s)"
    assert "waiting for 2 of 5 ephemeral containers to start" in said
