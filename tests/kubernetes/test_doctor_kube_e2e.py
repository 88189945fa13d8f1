"""The doctor end to end on Kubernetes: the CLI against runs stuck in pods of the fixture API.

GIVEN real runs stuck in pods (`kube_demo_environment`: a local Prefect server,
pods that are Docker containers running `prefect flow-run execute` or the
engine, behind the fixture Kubernetes API over HTTPS), WHEN `prefect-cancel-doctor
scan --format json` runs in node mode (host PIDs through /proc/*/cgroup) and in
ephemeral-container mode, THEN each run's verdict names its cause, the kind of
blocking call, the file:line inside the pod and the attach mode; and where an
ephemeral container may not attach (RBAC, Pod Security, a cluster without the
feature), the verdict quotes the API's refusal and says what to change.

One staged environment serves the whole module; the scans run in a fixed order
(the cluster without ephemeral containers first: later scans leave one in the
pods, and a running one is reused rather than added).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from prefect_cancel_doctor.clients.docker_api import DockerClient
from prefect_cancel_doctor.demo.kube_harness import KUBE_SCENARIOS, KubeRecipe
from tests.helpers import assert_calibrated, clean_environ, run_cli
from tests.kubernetes.conftest import progress

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.kube_harness import KubeDemoEnvironment, StuckPodRun

pytestmark = [pytest.mark.server, pytest.mark.docker]


@pytest.fixture(scope="module")
def staged(kube_docker: DockerClient) -> Iterator[KubeDemoEnvironment]:
    from prefect_cancel_doctor.demo.kube_harness import kube_demo_environment

    with kube_demo_environment(log=progress, client=kube_docker) as environment:
        progress("timings (s): " + ", ".join(f"{k}={v}" for k, v in environment.timings.items()))
        yield environment
    from prefect_cancel_doctor.demo.docker_harness import OWNER_LABEL

    left = kube_docker.containers(filters={"label": [f"{OWNER_LABEL}={environment.owner}"]})
    assert not left, f"containers left behind: {[c.id[:12] for c in left]}"


def doctor(environment: KubeDemoEnvironment, *args: str, **env: Any) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=clean_environ(**environment.env(**env)), timeout=600)


def scan(environment: KubeDemoEnvironment, **env: Any) -> dict[str, Any]:
    result = doctor(environment, "scan", "--format", "json", "--samples", "2", **env)
    assert result.returncode == 1, result.stderr
    return {e["flow_run"]["id"]: e for e in json.loads(result.stdout)["runs"]}


#: The fixture's requests (method, path, query, content type) during the module's ephemeral scan,
#: and its first node-mode scan.
EPHEMERAL_REQUESTS: list[tuple[str, str, dict[str, str], str | None]] = []
NODE_REQUESTS: list[tuple[str, str, dict[str, str], str | None]] = []


@pytest.fixture(scope="module")
def scans(staged: KubeDemoEnvironment) -> dict[str, dict[str, Any]]:
    """Every scan of the module, in this order: node, no ephemeral containers, ephemeral, RBAC denied,
    the node NotReady."""
    first = len(staged.api.requests)
    done = {"node": scan(staged, attach="node")}
    NODE_REQUESTS[:] = staged.api.requests[first:]
    staged.api.cluster.ephemeral_containers = False
    try:
        done["unsupported"] = scan(staged, attach="ephemeral")
    finally:
        staged.api.cluster.ephemeral_containers = True
    first = len(staged.api.requests)
    done["ephemeral"] = scan(staged, attach="ephemeral")
    EPHEMERAL_REQUESTS[:] = staged.api.requests[first:]
    done["rbac"] = scan(staged, attach="ephemeral", restricted=True)
    staged.api.cluster.set_node_ready("Unknown")
    try:
        done["not_ready"] = scan(staged, attach="node")
    finally:
        staged.api.cluster.set_node_ready("True")
    return done


#: Every scenario in both modes, but Pod Security's in ephemeral mode (refused: its own test below).
CASES = [
    pytest.param(s, m, id=f"{s}-{m}")
    for s in KUBE_SCENARIOS
    for m in ("node", "ephemeral")
    if (s, m) != ("kube_baseline", "ephemeral")
]


@pytest.mark.parametrize(("scenario", "mode"), CASES)
def test_scan_names_cause_kind_line_and_attach_mode(
    scenario: str, mode: str, staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    run: StuckPodRun = staged.run(scenario)
    entry = scans[mode].get(run.run_id)
    assert entry is not None, f"{scenario}: run missing from the {mode} scan"
    verdict = entry["verdict"]
    assert verdict["cause"] == run.expected_cause.value, verdict["summary"]
    target = entry["target"]
    assert target["kind"] == "kubernetes"
    assert (target["pod"]["namespace"], target["pod"]["name"]) == (run.namespace, run.pod)
    call = verdict["blocking_call"]
    if run.expected_location is not None:
        assert call is not None, verdict["summary"]
        assert run.expected_kind is not None and call["kind"] == run.expected_kind.value
        assert (call["filename"], call["line"]) == tuple(run.expected_location), verdict["summary"]
    staged_scenario = KUBE_SCENARIOS[scenario]
    # A Terminating pod gets no ephemeral container (a real kubelet never starts one): on its node it
    # is sampled in node mode, whichever mode was asked.
    terminating = staged_scenario.recipe is KubeRecipe.TERMINATING_IN_GRACE
    assert target["pod"]["attach"] == (("node" if terminating else mode) if run.running else "none")
    if staged_scenario.expected_delivery is not None:
        delivery = verdict["delivery"]
        assert delivery["sigterm"] == staged_scenario.expected_delivery.value, delivery
        absorbed = staged_scenario.expected_absorbed
        assert delivery["absorbed_by"] == (absorbed.value if absorbed else None), delivery
        assert verdict["confidence"] >= 0.9, (verdict["confidence"], delivery)
    if terminating:
        # The kubelet's SIGTERM went to the engine (PID 1): the pod's deletion and Killing event are signs.
        signs = " ".join(verdict["delivery"]["signs_for"])
        assert "Terminating since" in signs and "Killing" in signs, signs
    if scenario == "kube_except_loop":
        deployed = Path(run.expected_location[0])  # type: ignore[index]
        line = next(
            n
            for n, text in enumerate(deployed.read_text().splitlines(), 1)
            if text.strip().startswith("except BaseException")
        )
        assert f"{deployed.name}:{line}" in verdict["summary"], verdict["summary"]


def test_shell_pid1_and_no_runner_evidence(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    for mode in ("node", "ephemeral"):
        shell = scans[mode][staged.run("kube_shell_pid1").run_id]["verdict"]
        assert any(
            "PID 1 of container prefect-job of pod" in e and "no SIGTERM handler" in e
            for e in shell["evidence"]
        )
        assert any("kubelet's SIGTERM" in e for e in shell["evidence"])
        no_runner = scans[mode][staged.run("kube_no_runner").run_id]["verdict"]
        assert any(
            "python -m prefect.engine" in e and "no Prefect Runner" in e for e in no_runner["evidence"]
        )


def test_terminating_pod_held_by_its_finalizer(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    verdict = scans["node"][staged.run("kube_terminating").run_id]["verdict"]
    assert "held by its finalizer(s) pcd.example.com/hold" in verdict["summary"]
    assert "the Foreground deletion of its Job" in verdict["summary"]
    assert any("grace period of 2.0s, which ended" in e for e in verdict["evidence"])
    assert any("Killing" in e for e in verdict["evidence"])


def test_oomkilled_and_job_deleted(staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]) -> None:
    oom = scans["node"][staged.run("kube_oom").run_id]["verdict"]
    assert "was OOMKilled (exit code 137)" in oom["summary"]
    deleted = scans["node"][staged.run("kube_job_deleted").run_id]["verdict"]
    assert any("was deleted but its pod" in e and "Orphan" in e for e in deleted["evidence"])
    assert deleted["stop_now"][0].startswith("kubectl delete pod -n pcd-flows ")  # no Job left to delete


def test_orphaned_job_is_stopped_with_kubectl(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    run = staged.run("kube_orphan")
    entry = scans["node"][run.run_id]
    assert entry["flow_run"]["state_type"] == "CANCELLED"
    assert entry["verdict"]["stop_now"] == [
        f"kubectl delete job -n pcd-flows {run.job} --cascade=background --wait=false",
        f"kubectl delete pod -n pcd-flows {run.pod} --grace-period=0 --force",
    ]


def test_pod_security_forbids_sys_ptrace(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    verdict = scans["ephemeral"][staged.run("kube_baseline").run_id]["verdict"]
    assert verdict["cause"] == "not_attachable"
    assert 'violates PodSecurity "baseline:latest": non-default capabilities' in verdict["summary"]
    assert '"SYS_PTRACE"' in verdict["summary"]
    assert "pod-security.kubernetes.io/enforce=privileged" in verdict["summary"]


def test_rbac_denied_names_the_missing_rule(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    for scenario in ("kube_no_runner", "kube_signal_pending"):
        verdict = scans["rbac"][staged.run(scenario).run_id]["verdict"]
        assert verdict["cause"] == "not_attachable"
        assert "RBAC forbids the ephemeral container" in verdict["summary"]
        assert "patch pods/ephemeralcontainers in namespace pcd-flows: not allowed" in verdict["summary"]
        assert 'resources: ["pods/ephemeralcontainers"], verbs: ["patch"]' in verdict["summary"]
    # pods with nothing to attach to are diagnosed all the same
    assert scans["rbac"][staged.run("kube_oom").run_id]["verdict"]["cause"] == "infrastructure_gone"


def test_cluster_without_ephemeral_containers(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    verdict = scans["unsupported"][staged.run("kube_no_runner").run_id]["verdict"]
    assert verdict["cause"] == "not_attachable"
    assert "does not serve ephemeral containers" in verdict["summary"]
    assert "404 NotFound: the server could not find the requested resource" in verdict["summary"]
    assert "node mode" in verdict["summary"]


def test_a_second_scan_reuses_the_ephemeral_container(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    run = staged.run("kube_no_runner")
    first = scans["ephemeral"][run.run_id]["target"]["pod"]
    result = doctor(
        staged, "inspect", "--pod", f"{run.namespace}/{run.pod}", "--format", "json", "--samples", "2",
        attach="ephemeral",
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    entry = json.loads(result.stdout)["runs"][0]
    again = entry["target"]["pod"]
    assert first["debug_container"] == again["debug_container"] == "pcd-doctor-prefect-job-1"
    assert again["ephemeral_containers"] == ["pcd-doctor-prefect-job-1"]
    assert entry["verdict"]["cause"] == "cancel_not_observed"
    assert any("stays in the pod's spec until the pod is deleted" in e for e in entry["verdict"]["evidence"])


def test_every_ephemeral_container_is_added_before_any_is_waited_on(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    """All patches first (as fast as the API answers), then one wait for all: the pods are read by a
    list of the namespace (their Jobs' label), not one GET a pod a poll."""
    requests = EPHEMERAL_REQUESTS
    patches = [
        i
        for i, (method, path, query, _) in enumerate(requests)
        if method == "PATCH" and path.endswith("/ephemeralcontainers") and query.get("dryRun") != "All"
    ]
    added = [
        e["target"]["pod"]["debug_container"]
        for e in scans["ephemeral"].values()
        if (e["target"].get("pod") or {}).get("debug_container")
    ]
    assert len(patches) == len(added) >= 5, (len(patches), added)
    waits = [
        i
        for i, (method, path, query, _) in enumerate(requests)
        if i > patches[0]
        and method == "GET"
        and (path.endswith("/log") or path.endswith("/pods") or "/pods/" in path)
    ]
    assert waits and max(patches) < min(waits), (max(patches), min(waits))
    polls = [requests[i] for i in waits if requests[i][1].endswith("/pods")]
    assert polls and all(q.get("labelSelector", "").startswith("job-name in (") for _, _, q, _ in polls)
    single = [requests[i][1] for i in waits if not requests[i][1].endswith(("/pods", "/log"))]
    assert not single, single  # no pod read on its own while they are waited on


def test_node_mode_reads_the_pods_of_all_jobs_together(
    staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    """One list of pods a namespace for every run's Job (not one a run), and each node once."""
    lists = [q.get("labelSelector", "") for m, p, q, _ in NODE_REQUESTS if m == "GET" and p.endswith("/pods")]
    namespaces = {run.namespace for run in staged.runs}
    assert len(lists) == len(namespaces) and all(s.startswith("job-name in (") for s in lists), lists
    nodes = [p for m, p, _, _ in NODE_REQUESTS if m == "GET" and p.startswith("/api/v1/nodes/")]
    assert len(nodes) == 1, nodes
    assert all(e["verdict"]["cause"] for e in scans["node"].values())


def test_evicted_pod(staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]) -> None:
    verdict = scans["node"][staged.run("kube_evicted").run_id]["verdict"]
    assert "was evicted by the kubelet (The node was low on resource: memory.)" in verdict["summary"]
    assert any("Evicted" in e and e.startswith("event ") for e in verdict["evidence"])


def test_node_not_ready(staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]) -> None:
    verdict = scans["not_ready"][staged.run("kube_no_runner").run_id]["verdict"]
    assert verdict["cause"] == "infrastructure_gone"
    assert "which is not Ready (NodeStatusUnknown)" in verdict["summary"]
    assert verdict["confidence"] == 0.7


def test_diagnose_one_run_as_markdown(staged: KubeDemoEnvironment) -> None:
    run = staged.run("kube_shell_pid1")
    result = doctor(staged, "diagnose", run.run_id, "--format", "markdown", "--samples", "2", attach="node")

    assert result.returncode == 1, result.stderr
    assert "pid1_no_forward" in result.stdout
    assert f"{run.expected_location[0]}:{run.expected_location[1]}" in result.stdout  # type: ignore[index]
    assert f"kubectl delete pod -n {run.namespace} {run.pod} --grace-period=0 --force" in result.stdout


@pytest.mark.parametrize("mode", ["node", "ephemeral"])
def test_confidence_is_calibrated_on_the_staged_pods(
    mode: str, staged: KubeDemoEnvironment, scans: dict[str, dict[str, Any]]
) -> None:
    """Each band's verdicts are right at least as often as the band claims (README: Confidence)."""
    verdicts = [
        (
            scans[mode][run.run_id]["verdict"]["confidence"],
            scans[mode][run.run_id]["verdict"]["cause"] == run.expected_cause.value,
        )
        for run in staged.runs
        if (run.scenario, mode) != ("kube_baseline", "ephemeral")
    ]
    assert_calibrated(verdicts, f"kubernetes pods ({mode})")
