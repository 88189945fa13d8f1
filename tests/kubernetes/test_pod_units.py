"""Pod locating and pod findings without a cluster: cgroup layouts, attach choice, the pod rules.

GIVEN /proc/PID/cgroup texts of containerd, CRI-O and Docker (cgroup v1 and v2),
and pod facts as the API would give them, WHEN they are read, THEN the container
id, the attach mode and the verdicts are the ones the README promises.
"""

from __future__ import annotations

import pytest

from prefect_cancel_doctor.diagnose.rules import Evidence, diagnose
from prefect_cancel_doctor.kinds.kubernetes.facts import pod_stop_commands, runs_runner
from prefect_cancel_doctor.kinds.kubernetes.locate import (
    KubeAttachError,
    choose_attach,
    container_id_of_cgroup,
)
from prefect_cancel_doctor.model import (
    Cause,
    FlowRunRef,
    InfraKind,
    PodAttach,
    PodEventFact,
    PodFacts,
    StateType,
    Target,
)

ID = "4f1d0c9e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a190817263"


@pytest.mark.parametrize(
    "text",
    [
        # containerd, systemd driver, cgroup v2
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c.slice/cri-containerd-{ID}.scope\n",
        # containerd, cgroupfs driver, cgroup v1
        f"12:memory:/kubepods/burstable/pod1b2c3d4e-0000-1111-2222-333344445555/{ID}\n11:cpu,cpuacct:/kubepods/burstable/pod1b2c/{ID}\n",
        # CRI-O, cgroup v2
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice/crio-{ID}.scope\n",
        # Docker (cri-dockerd), systemd and cgroupfs
        f"0::/system.slice/docker-{ID}.scope\n",
        f"4:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n",
        # seen from a private cgroup namespace (a DaemonSet pod on cgroup v2)
        f"0::/../../kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope\n",
    ],
)
def test_container_id_in_every_cgroup_layout(text: str) -> None:
    assert container_id_of_cgroup(text) == ID


@pytest.mark.parametrize(
    "text",
    ["0::/user.slice/user-0.slice/session-3.scope\n", "0::/\n", "12:memory:/kubepods/burstable/pod1b2c\n"],
)
def test_no_container_id_outside_containers(text: str) -> None:
    assert container_id_of_cgroup(text) is None


def test_attach_choice() -> None:
    assert choose_attach(None, node_visible=True) is PodAttach.NODE
    assert choose_attach("auto", node_visible=False) is PodAttach.EPHEMERAL
    assert choose_attach("ephemeral", node_visible=True) is PodAttach.EPHEMERAL
    with pytest.raises(KubeAttachError, match="unknown Kubernetes attach mode"):
        choose_attach("ssh", node_visible=True)


def test_runner_command() -> None:
    assert runs_runner(("prefect", "flow-run", "execute"))
    assert runs_runner(("/usr/bin/tini", "-g", "--", "prefect", "flow-run", "execute"))
    assert not runs_runner(("python", "-m", "prefect.engine"))


def _run(state: StateType = StateType.CANCELLING) -> FlowRunRef:
    return FlowRunRef(
        id="0b6c7a1e-7d3e-4a63-9c1b-1f2e3d4c5b6a",
        name="crafty-lemur",
        flow_name="etl",
        deployment_name="etl/prod",
        work_pool_name="k8s",
        state_type=state,
        state_name=state.value.title(),
        state_message=None,
        start_time="2026-01-01T00:00:00Z",
        infrastructure_pid="prod:crafty-lemur-x7k2p",
        labels={},
        cancelling_for_seconds=600.0,
        cancelling_since="2026-01-01T00:05:00Z",
    )


def _verdict(pod: PodFacts, state: StateType = StateType.CANCELLING):  # type: ignore[no-untyped-def]
    target = Target(kind=InfraKind.KUBERNETES, description="pod", pod=pod)
    return diagnose(Evidence(_run(state), target))


BASE = PodFacts(
    namespace="prod",
    job="crafty-lemur-x7k2p",
    job_exists=True,
    backoff_limit=0,
    name="crafty-lemur-x7k2p-abcde",
    phase="Failed",
    node="node-1",
    node_ready="True",
    container="prefect-job",
    container_id=f"containerd://{ID}",
    command=("prefect", "flow-run", "execute"),
)


def test_oomkilled_pod_is_infrastructure_gone_with_the_reason() -> None:
    pod = PodFacts(
        **{**BASE.__dict__, "container_state": "terminated", "state_reason": "OOMKilled", "exit_code": 137}
    )
    verdict = _verdict(pod)
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE
    assert "OOMKilled" in verdict.summary
    assert any("memory limit" in fix for fix in verdict.remediation)


def test_evicted_and_node_not_ready() -> None:
    evicted = PodFacts(
        **{
            **BASE.__dict__,
            "reason": "Evicted",
            "message": "The node was low on resource: memory.",
            "container_state": "terminated",
        }
    )
    lost = PodFacts(
        **{
            **BASE.__dict__,
            "phase": "Running",
            "node_ready": "Unknown",
            "node_reason": "NodeStatusUnknown",
            "container_state": "running",
            "running": True,
        }
    )
    assert "evicted" in _verdict(evicted).summary and "low on resource" in _verdict(evicted).summary
    verdict = _verdict(lost)
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE and "not Ready (NodeStatusUnknown)" in verdict.summary


def test_terminating_past_grace_held_by_finalizers() -> None:
    pod = PodFacts(
        **{
            **BASE.__dict__,
            "container_state": "terminated",
            "state_reason": "Error",
            "exit_code": 137,
            "deletion_timestamp": "2026-01-01T00:06:00Z",
            "deletion_grace_period_seconds": 30,
            "past_grace_seconds": 240.0,
            "finalizers": ("example.com/protect",),
            "events": (PodEventFact("Normal", "Killing", "Stopping container prefect-job"),),
        }
    )
    verdict = _verdict(pod)
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE
    assert "held by its finalizer(s) example.com/protect" in verdict.summary
    assert any("grace period of 30s, which ended 4m00s ago" in e for e in verdict.evidence)
    assert any("Killing" in e for e in verdict.evidence)
    assert any("finalizers" in fix and "kubectl patch pod" in fix for fix in verdict.remediation)


def test_job_and_pods_gone() -> None:
    pod = PodFacts(namespace="prod", job="crafty-lemur-x7k2p", job_exists=False)
    verdict = _verdict(pod)
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE and "no longer exist" in verdict.summary


def test_stop_commands_delete_the_job_first() -> None:
    pod = PodFacts(**{**BASE.__dict__, "running": True})
    assert pod_stop_commands(pod) == [
        "kubectl delete job -n prod crafty-lemur-x7k2p --cascade=background --wait=false",
        "kubectl delete pod -n prod crafty-lemur-x7k2p-abcde --grace-period=0 --force",
    ]
    orphan = PodFacts(**{**BASE.__dict__, "running": True, "job_exists": False})
    assert pod_stop_commands(orphan) == [
        "kubectl delete pod -n prod crafty-lemur-x7k2p-abcde --grace-period=0 --force"
    ]


def test_the_runners_sigterm_behaviour_is_evidence_only_where_a_runner_runs() -> None:
    from prefect_cancel_doctor.kinds.kubernetes.facts import pod_facts
    from prefect_cancel_doctor.model import Cause, PodFacts

    pod = PodFacts(
        namespace="ns",
        job="j",
        name="j-x",
        settings={"PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": "reschedule"},
    )
    assert any("reschedules the run" in fact for fact in pod_facts(pod, Cause.CANCEL_NOT_OBSERVED))
    assert not any(
        "SIGTERM_BEHAVIOR" in f for f in pod_facts(pod, Cause.CANCEL_NOT_OBSERVED, runner_runs=False)
    )
