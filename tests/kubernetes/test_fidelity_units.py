"""What a real cluster does that the fixture cannot show, as unit tests (docs/kubernetes-fidelity.md).

GIVEN /proc trees of a node (CRI-O's conmon beside its container, a process in
a sub-cgroup, a pod sharing one PID namespace), pods and API answers as a real
cluster gives them (a Terminating pod, another cluster's uid, the Job
controller's job-tracking finalizer), WHEN the doctor locates, samples and
diagnoses them, THEN it never takes conmon or /pause for the container, never
waits for an ephemeral container a kubelet will not start, never calls a Job
of another cluster gone, and never blames a finalizer the Job controller is
about to remove.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, cast

import pytest

from prefect_cancel_doctor.clients.kube_api import (
    JobInfo,
    KubeApiError,
    KubeClient,
    NodeInfo,
    PodEvent,
    PodInfo,
    pod_info,
)
from prefect_cancel_doctor.clients.kube_config import KubeConnection
from prefect_cancel_doctor.demo.kube_apiserver import JsonPatchError, json_patch
from prefect_cancel_doctor.diagnose.rules import Evidence, diagnose
from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.kubernetes.facts import JOB_TRACKING_FINALIZER
from prefect_cancel_doctor.kinds.kubernetes.locate import (
    cgroup_index,
    container_id_of_cgroup,
    locate_job,
    locate_pod,
    recorded_cluster_uid,
)
from prefect_cancel_doctor.kinds.kubernetes.pod import PodSampleError, sample_pod
from prefect_cancel_doctor.model import (
    Cause,
    FlowRunRef,
    InfraKind,
    PodAttach,
    PodFacts,
    Role,
    StateType,
    Target,
)

ID = "4f1d0c9e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a190817263"
OTHER = "9" * 64
RUN = "0b6c7a1e-7d3e-4a63-9c1b-1f2e3d4c5b6a"
POD_SLICE = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c.slice"


# -- a node's /proc ----------------------------------------------------------------------


def _process(
    root: Path,
    pid: int,
    ppid: int,
    argv: list[str],
    cgroup: str,
    *,
    ns_pid: int | None = None,
    run_id: str | None = RUN,
    start: int = 1000,
) -> None:
    """One /proc/PID as the kernel writes it (what `procfs.read_process` reads)."""
    base = root / str(pid)
    (base / "task" / str(pid)).mkdir(parents=True)
    comm = Path(argv[0]).name[:15]
    stat = f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"
    nspid = f"{pid}\t{ns_pid}" if ns_pid is not None else str(pid)
    status = (
        f"Name:\t{comm}\nState:\tS (sleeping)\nPid:\t{pid}\nPPid:\t{ppid}\nNSpid:\t{nspid}\n"
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n"
        "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
    )
    for directory in (base, base / "task" / str(pid)):
        (directory / "stat").write_text(stat)
        (directory / "status").write_text(status)
        (directory / "comm").write_text(comm + "\n")
    (base / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (base / "environ").write_bytes(f"PREFECT__FLOW_RUN_ID={run_id}\0".encode() if run_id else b"")
    (base / "cgroup").write_text(cgroup)


def _ptrace_capable(root: Path) -> None:
    (root / "self").mkdir()
    (root / "self" / "status").write_text("CapEff:\t000001ffffffffff\n")


@pytest.fixture
def crio_node(tmp_path: Path) -> Path:
    """A CRI-O node: the flow container (PID 1 and a child in its `init` sub-cgroup), conmon
    watching it from crio-conmon-<id>.scope, another pod's container, a host process."""
    _ptrace_capable(tmp_path)
    _process(tmp_path, 900, 1, ["/usr/bin/conmon", "-c", ID], f"0::{POD_SLICE}/crio-conmon-{ID}.scope\n",
             run_id=None)  # fmt: skip
    scope = f"0::{POD_SLICE}/crio-{ID}.scope"
    _process(tmp_path, 901, 900, ["sh", "-c", "python -m prefect.engine"], f"{scope}\n", ns_pid=1)
    _process(tmp_path, 902, 901, ["python", "-m", "prefect.engine"], f"{scope}/init\n", ns_pid=7)
    _process(tmp_path, 950, 1, ["nginx"], f"0::{POD_SLICE}/crio-{OTHER}.scope\n", ns_pid=1, run_id=None)
    _process(tmp_path, 1, 0, ["/sbin/init"], "0::/init.scope\n", run_id=None)
    return tmp_path


def test_conmon_is_never_the_container_and_sub_cgroups_are(crio_node: Path) -> None:
    assert container_id_of_cgroup(f"0::{POD_SLICE}/crio-conmon-{ID}.scope\n") is None
    assert container_id_of_cgroup(f"0::/machine.slice/libpod-conmon-{ID}.scope\n") is None
    assert container_id_of_cgroup(f"0::{POD_SLICE}/cri-containerd-{ID}.scope/init\n") == ID
    assert container_id_of_cgroup(f"7:pids:/kubepods/besteffort/pod1b2c/crio-conmon-{ID}\n") is None

    index = cgroup_index(str(crio_node))

    assert index == {ID: [901, 902], OTHER: [950]}


# -- a stand-in for the API ------------------------------------------------------------------


class _Api:
    """The reads `locate_job`, `locate_pod` and `sample_pod` make, answered from fixed records."""

    def __init__(
        self,
        *,
        pods: list[PodInfo] = (),  # type: ignore[assignment]
        job: JobInfo | None = None,
        cluster_uid: str | Exception | None = None,
    ) -> None:
        self.pods, self.job, self._uid = list(pods), job, cluster_uid
        self.connection = KubeConnection(
            "https://10.0.0.1:6443", "kubeconfig ~/.kube/config", context="prod-eu"
        )
        self.patches: list[dict[str, Any]] = []

    def cluster_uid(self) -> str | None:
        if isinstance(self._uid, Exception):
            raise self._uid
        return self._uid

    def get_job(self, namespace: str, name: str) -> JobInfo | None:
        return self.job

    def list_pods(self, namespace: str, selector: str | None = None) -> list[PodInfo]:
        return self.pods

    def get_pod(self, namespace: str, name: str) -> PodInfo | None:
        return next((p for p in self.pods if p.name == name), None)

    def events_for(self, namespace: str, kind: str, name: str) -> list[PodEvent]:
        return []

    def get_node(self, name: str) -> NodeInfo | None:
        return NodeInfo(name, "True")

    def add_ephemeral_container(self, namespace: str, pod: str, spec: Any, **options: Any) -> PodInfo:
        self.patches.append(dict(spec))
        raise AssertionError("no ephemeral container may be added to a Terminating pod")

    def access_review(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Terminating pod needs no ephemeral container, so no RBAC check")


def _client(api: _Api) -> KubeClient:
    return cast(KubeClient, api)


def _pod(
    *,
    runtime: str = "cri-o",
    deleting: bool = False,
    shared: bool = False,
    finalizers: tuple[str, ...] = (),
    state: str = "running",
) -> PodInfo:
    meta: dict[str, Any] = {"name": "etl-x7k2p-abcde", "namespace": "prod", "uid": "u1"}
    if deleting:
        meta |= {"deletionTimestamp": "2026-01-01T00:10:00Z", "deletionGracePeriodSeconds": 30}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    return pod_info(
        {
            "metadata": meta,
            "spec": {
                "nodeName": "node-7",
                "shareProcessNamespace": shared,
                "containers": [
                    {
                        "name": "prefect-job",
                        "image": "flow",
                        "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": RUN}],
                    }
                ],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "prefect-job", "containerID": f"{runtime}://{ID}", "state": {state: {}}}
                ],
            },
        }
    )


# -- Terminating pods: never an ephemeral container ------------------------------------------


def test_terminating_pod_is_not_attachable_in_ephemeral_mode_with_the_reason(tmp_path: Path) -> None:
    api = _Api(pods=[_pod(deleting=True)])

    location = locate_pod(
        api.pods[0], _client(api), run_id=RUN, proc_root=str(tmp_path), attach="ephemeral",
        debug_image="debug:1", cgroups=dict,
    )  # fmt: skip

    assert location.pod is not None and location.pod.attach is PodAttach.NONE
    assert location.unreachable == (
        "pod prod/etl-x7k2p-abcde is Terminating: a kubelet never starts an ephemeral container in a "
        "terminating pod; run the doctor on node node-7 (node mode) to sample it"
    )


def test_terminating_pod_on_this_node_is_sampled_in_node_mode(crio_node: Path) -> None:
    api = _Api(pods=[_pod(deleting=True)])

    location = locate_pod(
        api.pods[0], _client(api), run_id=RUN, proc_root=str(crio_node), attach="ephemeral",
        debug_image="debug:1",
    )  # fmt: skip

    assert location.unreachable is None
    assert location.pod is not None and location.pod.attach is PodAttach.NODE
    assert dict(location.pids) == {901: Role.PID1, 902: Role.ENGINE}  # conmon (900) is not in it
    assert any("is Terminating" in n and "sampled from this host" in n for n in location.notes)


def test_the_sampler_adds_nothing_to_a_terminating_pod() -> None:
    api = _Api(pods=[_pod(deleting=True)])

    with pytest.raises(PodSampleError, match="a kubelet never starts an ephemeral container"):
        sample_pod(_client(api), "prod", "etl-x7k2p-abcde", "prefect-job", image="debug:1", flow_run_id=RUN)
    assert api.patches == []


def _run() -> FlowRunRef:
    return FlowRunRef(
        id=RUN, name="crafty-lemur", flow_name="etl", deployment_name="etl/prod", work_pool_name="k8s",
        state_type=StateType.CANCELLING, state_name="Cancelling", state_message=None,
        start_time="2026-01-01T00:00:00Z", infrastructure_pid="prod:etl-x7k2p", labels={},
        cancelling_for_seconds=600.0, cancelling_since="2026-01-01T00:05:00Z",
    )  # fmt: skip


def test_a_terminating_pod_that_still_runs_reads_not_attachable(tmp_path: Path) -> None:
    api = _Api(pods=[_pod(deleting=True)])
    location = locate_pod(
        api.pods[0], _client(api), run_id=RUN, proc_root=str(tmp_path), attach="auto",
        debug_image="debug:1", cgroups=dict,
    )  # fmt: skip
    target = Target(kind=InfraKind.KUBERNETES, description=location.description, pod=location.pod)

    verdict = diagnose(Evidence(_run(), target, location.unreachable, None, location.notes))

    assert verdict.cause is Cause.NOT_ATTACHABLE
    assert "a kubelet never starts an ephemeral container in a terminating pod" in verdict.summary


# -- the cluster uid of an older infrastructure_pid ------------------------------------------


def _job() -> JobInfo:
    return JobInfo("prod", "etl-x7k2p", "job-uid")


def test_another_clusters_job_is_not_attachable_never_gone() -> None:
    ref = parse_infrastructure_pid("1111-aaaa:prod:etl-x7k2p")
    api = _Api(cluster_uid="2222-bbbb")

    location = locate_job(RUN, ref, _client(api), cgroups=dict)
    target = Target(kind=InfraKind.KUBERNETES, description=location.description, pod=location.pod)
    verdict = diagnose(Evidence(_run(), target, location.unreachable, None, location.notes))

    assert recorded_cluster_uid(ref) == "1111-aaaa"
    assert location.unreachable is not None
    assert location.unreachable.startswith(
        "the run's Job is in cluster 1111-aaaa; the current context prod-eu is cluster 2222-bbbb: "
        "Job prod/etl-x7k2p is not found here"
    )
    assert verdict.cause is Cause.NOT_ATTACHABLE


def test_same_cluster_uid_and_a_gone_job_is_infrastructure_gone() -> None:
    api = _Api(cluster_uid="1111-aaaa")

    location = locate_job(
        RUN, parse_infrastructure_pid("1111-aaaa:prod:etl-x7k2p"), _client(api), cgroups=dict
    )
    target = Target(kind=InfraKind.KUBERNETES, description=location.description, pod=location.pod)

    assert location.unreachable is None
    assert diagnose(Evidence(_run(), target, None, None, location.notes)).cause is Cause.INFRASTRUCTURE_GONE


def test_uid_mismatch_but_the_runs_own_pod_is_here(tmp_path: Path) -> None:
    # prefect-kubernetes records PREFECT_KUBERNETES_CLUSTER_UID instead of kube-system's uid when set.
    api = _Api(pods=[_pod(state="terminated")], job=_job(), cluster_uid="2222-bbbb")

    location = locate_job(
        RUN, parse_infrastructure_pid("custom-uid:prod:etl-x7k2p"), _client(api), cgroups=dict
    )

    assert location.unreachable is None and location.pod is not None and location.pod.name
    assert any("PREFECT_KUBERNETES_CLUSTER_UID" in n for n in location.notes)


def test_unreadable_kube_system_is_a_note() -> None:
    denied = KubeApiError("x", 403, "Forbidden", 'namespaces "kube-system" is forbidden')
    api = _Api(job=_job(), cluster_uid=denied)

    location = locate_job(
        RUN, parse_infrastructure_pid("1111-aaaa:prod:etl-x7k2p"), _client(api), cgroups=dict
    )

    assert location.unreachable is None
    assert any(
        "could not be checked (reading namespace kube-system: 403 Forbidden)" in n for n in location.notes
    )


def test_the_current_form_has_no_cluster_uid() -> None:
    assert recorded_cluster_uid(parse_infrastructure_pid("prod:etl-x7k2p")) is None


# -- the Job controller's job-tracking finalizer ---------------------------------------------

GONE = PodFacts(
    namespace="prod", job="etl-x7k2p", job_exists=True, name="etl-x7k2p-abcde", phase="Failed",
    node="node-7", node_ready="True", container="prefect-job", container_state="terminated",
    state_reason="Error", exit_code=137, deletion_timestamp="2026-01-01T00:06:00Z",
    deletion_grace_period_seconds=30,
)  # fmt: skip


def _verdict(pod: PodFacts):  # type: ignore[no-untyped-def]
    return diagnose(Evidence(_run(), Target(kind=InfraKind.KUBERNETES, description="pod", pod=pod)))


def test_a_pod_held_briefly_by_job_tracking_blames_no_finalizer() -> None:
    pod = dataclasses.replace(GONE, finalizers=(JOB_TRACKING_FINALIZER,), past_grace_seconds=2.0)

    verdict = _verdict(pod)

    assert verdict.cause is Cause.INFRASTRUCTURE_GONE
    assert f"only until the Job controller removes its {JOB_TRACKING_FINALIZER} finalizer" in verdict.summary
    assert "no finalizer is stuck" in verdict.summary and "held by its finalizer" not in verdict.summary
    assert not any("find the controller" in fix or "kubectl patch" in fix for fix in verdict.remediation)
    assert any("the Job controller's own finalizer" in e for e in verdict.evidence)


def test_a_pod_held_long_by_job_tracking_points_at_the_job_controller() -> None:
    pod = dataclasses.replace(GONE, finalizers=(JOB_TRACKING_FINALIZER,), past_grace_seconds=900.0)

    verdict = _verdict(pod)

    assert (
        "held by the Job controller's batch.kubernetes.io/job-tracking finalizer for 15m:" in verdict.summary
    )
    assert "kube-controller-manager" in verdict.summary
    assert any("check the Job controller" in fix for fix in verdict.remediation)


def test_another_finalizer_beside_job_tracking_is_the_one_blamed() -> None:
    pod = dataclasses.replace(
        GONE, finalizers=("example.com/protect", JOB_TRACKING_FINALIZER), past_grace_seconds=600.0
    )

    verdict = _verdict(pod)

    assert "held by its finalizer(s) example.com/protect;" in verdict.summary or verdict.summary.endswith(
        "held by its finalizer(s) example.com/protect; only the API state is stuck in Cancelling "
        "(nothing is left to report Cancelled)."
    )
    fix = next(f for f in verdict.remediation if "find the controller" in f)
    assert "example.com/protect" in fix and JOB_TRACKING_FINALIZER not in fix.split("--type=json")[0]
    patch = json.loads(fix.split("-p '")[1].split("'`")[0])
    assert patch == [
        {"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/protect"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]


# -- shareProcessNamespace: /pause is PID 1 ---------------------------------------------------


@pytest.fixture
def shared_pod_node(tmp_path: Path) -> Path:
    """A containerd node running a pod with shareProcessNamespace: /pause (the sandbox's cgroup) is
    PID 1 of the pod; the flow container's main process, a shell, is PID 7, the engine PID 8."""
    _ptrace_capable(tmp_path)
    sandbox = "a" * 64
    _process(tmp_path, 800, 700, ["/pause"], f"0::{POD_SLICE}/cri-containerd-{sandbox}.scope\n",
             ns_pid=1, run_id=None, start=500)  # fmt: skip
    scope = f"0::{POD_SLICE}/cri-containerd-{ID}.scope\n"
    _process(
        tmp_path, 801, 701, ["sh", "-c", "python -m prefect.engine; echo done"], scope, ns_pid=7, start=600
    )
    _process(tmp_path, 802, 801, ["python", "-m", "prefect.engine"], scope, ns_pid=8, start=610)
    return tmp_path


def test_shared_pid_namespace_roles_take_no_process_for_pid1(shared_pod_node: Path) -> None:
    api = _Api(pods=[_pod(runtime="containerd", shared=True)])

    location = locate_pod(
        api.pods[0], _client(api), run_id=RUN, proc_root=str(shared_pod_node), attach="node"
    )

    assert location.unreachable is None
    assert location.pod is not None and location.pod.attach is PodAttach.NODE
    # /pause (800) is not the container's; the shell is the container's main process but no PID 1.
    assert dict(location.pids) == {801: Role.CHILD, 802: Role.ENGINE}
    assert any("/pause" in n and "PID 7 of that namespace" in n for n in location.notes)


def test_unshared_pid_namespace_keeps_the_shell_as_pid1(crio_node: Path) -> None:
    api = _Api(pods=[_pod()])

    location = locate_pod(api.pods[0], _client(api), run_id=RUN, proc_root=str(crio_node), attach="node")

    assert dict(location.pids) == {901: Role.PID1, 902: Role.ENGINE}


# -- the fixture's JSON patch (RFC 6902) -------------------------------------------------------


def test_json_patch_operations() -> None:
    pod = {"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}}}

    patched = json_patch(pod, [
        {"op": "test", "path": "/metadata/finalizers/1", "value": "b"},
        {"op": "remove", "path": "/metadata/finalizers/1"},
        {"op": "add", "path": "/metadata/labels/a~1b", "value": "2"},
        {"op": "replace", "path": "/metadata/labels/x", "value": "3"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "c"},
        {"op": "copy", "from": "/metadata/labels/x", "path": "/metadata/labels/y"},
        {"op": "move", "from": "/metadata/labels/y", "path": "/metadata/labels/z"},
    ])  # fmt: skip

    assert patched == {"metadata": {"finalizers": ["a", "c"], "labels": {"x": "3", "a/b": "2", "z": "3"}}}
    assert pod["metadata"]["finalizers"] == ["a", "b"]  # a copy is patched
    for bad in (
        [{"op": "test", "path": "/metadata/finalizers/0", "value": "z"}],
        [{"op": "remove", "path": "/metadata/annotations"}],
        [{"op": "remove", "path": "/metadata/finalizers/5"}],
        [{"op": "jump", "path": "/metadata"}],
    ):
        with pytest.raises(JsonPatchError):
            json_patch(pod, bad)
