"""The doctor end to end where the fixture now behaves as a real cluster does (docs/kubernetes-fidelity.md).

GIVEN runs Cancelling in a local Prefect server whose Jobs live in the fixture
Kubernetes API (pods are Docker containers): a pod Terminating while its flow
still runs (SIGTERM ignored, a long grace period), a Job pod held only by the
Job controller's job-tracking finalizer (the controller behind), an older
``<cluster uid>:<namespace>:<job>`` infrastructure_pid naming another cluster,
and one naming this cluster for a Job that is gone, WHEN `scan` runs in
ephemeral and in node mode on the pods' node, and off it (in a PID namespace of
its own, as a doctor in a pod elsewhere), THEN the Terminating pod is never
given an ephemeral container (the fixture, as a kubelet, would never start it):
it is sampled in node mode on its node, even when ephemeral mode is asked for,
and off its node it is `not_attachable` with that reason;
another cluster's Job is `not_attachable`, never `infrastructure_gone`; and the
pod held by job-tracking blames no finalizer.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from prefect_cancel_doctor.clients.docker_api import DockerClient
from prefect_cancel_doctor.demo.kube_apiserver import PAUSE_SCRIPT
from tests.helpers import CLI, clean_environ, run_cli
from tests.kubernetes.conftest import DEBUG_IMAGE, POD_IMAGE, KubeImages, progress, unavailable

pytestmark = [pytest.mark.server, pytest.mark.docker]

NAMESPACE = "pcd-flows"
#: A flow container that ignores SIGTERM: its deleted pod stays Terminating while it runs on.
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring SIGTERM', flush=True); time.sleep(900)"
)
#: One that dies of SIGTERM (the default action).
SLEEPS = "import time; print('sleeping', flush=True); time.sleep(900)"


@dataclass
class World:
    env: dict[str, str]
    runs: dict[str, str]
    pods: dict[str, str]
    api: Any
    cluster_uid: str
    other_uid: str


def _job(api: Any, run_id: str, name: str, args: list[str], grace: int, *, shared: bool = False) -> str:
    """A Job as prefect-kubernetes makes it (container prefect-job, the run's id in its environment and
    labels); returns its pod's name once its container has printed its first line."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": grace,
        "containers": [
            {
                "name": "prefect-job",
                "image": POD_IMAGE,
                "args": args,
                "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": run_id}],
            }
        ],
    }
    if shared:
        spec["shareProcessNamespace"] = True
    api.cluster.create_job(
        NAMESPACE,
        {
            "metadata": {"name": name, "labels": {"prefect.io/flow-run-id": run_id}},
            "spec": {
                "backoffLimit": 0,
                "template": {"metadata": {"labels": {"prefect.io/flow-run-id": run_id}}, "spec": spec},
            },
        },
    )
    pod = next(p for p in api.cluster.pods.values() if p.document["metadata"]["labels"]["job-name"] == name)
    docker_id = pod.docker_ids["prefect-job"]
    deadline = time.monotonic() + 30
    while not api.cluster.docker.logs(docker_id)[0]:
        assert time.monotonic() < deadline, f"the container of Job {name} did not start"
        time.sleep(0.2)
    return str(pod.document["metadata"]["name"])


def _python(code: str, *extra: str) -> list[str]:
    return [f"{sys.prefix}/bin/python", "-c", code, *extra]


#: A shell as the container's main process, without a SIGTERM handler, running a process that
#: `argv_role` takes for the flow engine (its argv holds `prefect.engine`).
SHELL_OVER_ENGINE = [
    "sh",
    "-c",
    f"{sys.prefix}/bin/python -c {shlex.quote(SLEEPS)} prefect.engine; echo done",
]


@pytest.fixture(scope="module")
def world(kube_docker: DockerClient, kube_images: KubeImages) -> Iterator[World]:
    from prefect_cancel_doctor.demo.harness import LocalPrefect
    from prefect_cancel_doctor.demo.kube_apiserver import Policy, fake_cluster

    token = uuid.uuid4().hex
    with LocalPrefect(log=progress) as harness, fake_cluster(
        kube_docker,
        images={POD_IMAGE: kube_images.pod, DEBUG_IMAGE: kube_images.debug},
        host_mounts=kube_images.mounts,
        owner=kube_images.owner,
        policy=Policy(users={token: "pcd-admin"}),
        tls=True,
    ) as api:  # fmt: skip
        api.cluster.ensure_namespace(NAMESPACE)
        api.cluster.job_controller = False  # behind: the job-tracking finalizers stay for this module
        kubeconfig = api.kubeconfig(harness.workdir / "kubeconfig", token=token, namespace=NAMESPACE)
        flow_id = harness.client.create_flow_from_name("pcd-fidelity")
        deployment = harness.client.create_deployment(
            flow_id=flow_id, name="fidelity", entrypoint="flow.py:f"
        )
        names = ("terminating", "job_tracking", "other_cluster", "same_cluster", "shared", "unshared")
        runs = {name: harness.create_run(str(deployment), {}) for name in names}
        other_uid = str(uuid.uuid4())
        pids = {
            "terminating": f"{NAMESPACE}:etl-terminating",
            "job_tracking": f"{NAMESPACE}:etl-tracked",
            "other_cluster": f"{other_uid}:{NAMESPACE}:etl-elsewhere",
            "same_cluster": f"{api.cluster.uid}:{NAMESPACE}:etl-gone",
            "shared": f"{NAMESPACE}:etl-shared",
            "unshared": f"{NAMESPACE}:etl-unshared",
        }
        pods = {
            "terminating": _job(api, runs["terminating"], "etl-terminating", _python(IGNORES_SIGTERM), 900),
            "job_tracking": _job(api, runs["job_tracking"], "etl-tracked", _python(SLEEPS), 1),
            "shared": _job(api, runs["shared"], "etl-shared", SHELL_OVER_ENGINE, 30, shared=True),
            "unshared": _job(api, runs["unshared"], "etl-unshared", SHELL_OVER_ENGINE, 30),
        }
        for name, run_id in runs.items():
            harness.force_state(run_id, "RUNNING")
            harness.client.update_flow_run(uuid.UUID(run_id), infrastructure_pid=pids[name])
            harness.cancel_run(run_id)
        for name in ("terminating", "job_tracking"):  # as the worker's teardown or `kubectl delete pod` do
            api.cluster.delete_pod(NAMESPACE, pods[name], None)
        tracked = api.cluster.pods[(NAMESPACE, pods["job_tracking"])].docker_ids["prefect-job"]
        harness.wait_until(lambda: not kube_docker.inspect(tracked).running, 30, "the SIGTERM of etl-tracked")
        env = {
            "PREFECT_API_URL": harness.api_url,
            "KUBECONFIG": str(kubeconfig),
            "PCD_KUBE_DEBUG_IMAGE": DEBUG_IMAGE,
        }
        yield World(env, runs, pods, api, api.cluster.uid, other_uid)


def scan(world: World, attach: str, *, elsewhere: bool = False) -> dict[str, dict[str, Any]]:
    """`scan --format json` on the pods' node, or (`elsewhere`) in a PID namespace of its own, where
    no process of any pod is in its /proc: a doctor off the pods' node."""
    started = time.monotonic()
    args = ("scan", "--format", "json", "--samples", "2")
    env = clean_environ(**world.env, PCD_KUBE_ATTACH=attach)
    if elsewhere:
        command = ["unshare", "--pid", "--fork", "--mount-proc", *CLI, *args]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    else:
        result = run_cli(*args, env=env, timeout=600)
    progress(f"{attach} scan{' off the node' if elsewhere else ''}: {time.monotonic() - started:.1f} s")
    assert result.returncode in (0, 1), result.stderr
    return {e["flow_run"]["id"]: e for e in json.loads(result.stdout)["runs"]}


@pytest.fixture(scope="module")
def scans(world: World) -> dict[str, dict[str, dict[str, Any]]]:
    return {"ephemeral": scan(world, "ephemeral"), "node": scan(world, "node")}


@pytest.fixture(scope="module")
def off_node(world: World) -> dict[str, dict[str, Any]]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        unavailable("a doctor off the pods' node needs root and util-linux unshare (a PID namespace)")
    return scan(world, "auto", elsewhere=True)


def test_terminating_pod_off_its_node_gets_no_ephemeral_container_and_reads_not_attachable(
    world: World, off_node: dict[str, dict[str, Any]]
) -> None:
    entry = off_node[world.runs["terminating"]]
    pod = world.api.cluster.pods[(NAMESPACE, world.pods["terminating"])]

    verdict = entry["verdict"]
    assert verdict["cause"] == "not_attachable", verdict["summary"]
    assert verdict["summary"].startswith(
        f"pod {NAMESPACE}/{world.pods['terminating']} is Terminating: a kubelet never starts an ephemeral "
        "container in a terminating pod; run the doctor on node pcd-node-1 (node mode) to sample it"
    )
    assert entry["target"]["pod"]["attach"] == "none"
    assert not pod.document["spec"].get("ephemeralContainers")  # nothing was added to wait for


def test_terminating_pod_on_its_node_is_sampled_in_node_mode_even_asked_for_ephemeral(
    world: World, scans: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for mode in ("node", "ephemeral"):
        entry = scans[mode][world.runs["terminating"]]
        assert entry["target"]["pod"]["attach"] == "node", mode
        assert entry["verdict"]["cause"] != "not_attachable", entry["verdict"]["summary"]
        assert entry["target"]["pod"]["deletion_timestamp"]
        assert entry["target"]["processes"], "the flow's process was sampled"
        assert any("is Terminating: deletion requested" in e for e in entry["verdict"]["evidence"])
    evidence = scans["ephemeral"][world.runs["terminating"]]["verdict"]["evidence"]
    assert any(
        "a kubelet never starts an ephemeral container" in e and "sampled from this host" in e
        for e in evidence
    )
    spec = world.api.cluster.pods[(NAMESPACE, world.pods["terminating"])].document["spec"]
    assert not spec.get("ephemeralContainers")


def test_another_clusters_job_is_not_attachable(
    world: World, scans: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for mode in ("ephemeral", "node"):
        verdict = scans[mode][world.runs["other_cluster"]]["verdict"]
        assert verdict["cause"] == "not_attachable", verdict["summary"]
        assert (
            f"the run's Job is in cluster {world.other_uid}; the current context pcd-fixture is cluster "
            f"{world.cluster_uid}"
        ) in verdict["summary"]
        same = scans[mode][world.runs["same_cluster"]]["verdict"]
        assert same["cause"] == "infrastructure_gone", same["summary"]
        assert "no longer exist" in same["summary"]


def test_a_pod_held_by_job_tracking_blames_no_finalizer(
    world: World, scans: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for mode in ("ephemeral", "node"):
        verdict = scans[mode][world.runs["job_tracking"]]["verdict"]
        assert verdict["cause"] == "infrastructure_gone", verdict["summary"]
        assert (
            "only until the Job controller removes its batch.kubernetes.io/job-tracking" in verdict["summary"]
        )
        assert "no finalizer is stuck" in verdict["summary"]
        assert not any("find the controller" in fix for fix in verdict["remediation"])
    assert world.api.cluster.pods[(NAMESPACE, world.pods["job_tracking"])].document["metadata"][
        "finalizers"
    ] == ["batch.kubernetes.io/job-tracking"]


def test_shared_pid_namespace_takes_neither_pause_nor_the_shell_for_pid1(
    world: World, scans: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for mode in ("node", "ephemeral"):
        control = scans[mode][world.runs["unshared"]]
        assert control["verdict"]["cause"] == "pid1_no_forward", control["verdict"][
            "summary"
        ]  # the shell is PID 1
        entry = scans[mode][world.runs["shared"]]
        verdict = entry["verdict"]
        roles = {p["role"] for p in entry["target"]["processes"]}
        assert entry["target"]["pod"]["attach"] == mode
        assert verdict["cause"] not in ("pid1_no_forward", "not_attachable"), verdict["summary"]
        assert "engine" in roles and "pid1" not in roles, entry["target"]["processes"]
        # the sandbox's "pause" (PID 1 of the pod) is no process of the run
        assert not any(PAUSE_SCRIPT in p["proc"]["cmdline"] for p in entry["target"]["processes"])
        assert all(p["proc"]["ns_pid"] != 1 for p in entry["target"]["processes"])
        assert any("shares one PID namespace" in e and "/pause" in e for e in verdict["evidence"])
