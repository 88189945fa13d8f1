"""The ephemeral-container sampler's pure parts: its container, reuse by name, log rounds, refusals.

GIVEN pods and logs as the API returns them, WHEN the sampler reads them, THEN it
adds a container that targets the flow's with SYS_PTRACE, reuses its own running
one by name, reads the newest complete round by the node's timestamps, and turns
each refusal into the API's words plus what to change.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect_cancel_doctor.clients.kube_api import KubeApiError, KubeNotFound, PodInfo, pod_info
from prefect_cancel_doctor.kinds.kubernetes.pod import debug_container_spec, refusal, reusable
from prefect_cancel_doctor.kinds.kubernetes.pod_log import rounds as read_rounds


def test_debug_container_targets_the_flow_container_with_sys_ptrace() -> None:
    spec = debug_container_spec("pcd-doctor-prefect-job-1", "prefect-job", "debug:1", samples=3, native=False)

    assert spec["targetContainerName"] == "prefect-job"
    assert spec["securityContext"] == {"capabilities": {"add": ["SYS_PTRACE"]}}
    assert spec["command"][:2] == ["/bin/sh", "-c"]
    assert spec["args"][:2] == ["py-spy", "3"] and "--native" not in spec["args"]
    assert any(e["name"] == "PCD_SCRIPT" for e in spec["env"])


def _pod(ephemeral: list[tuple[str, str, str]]) -> PodInfo:
    return pod_info(
        {
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {
                "containers": [{"name": "prefect-job", "image": "flow"}],
                "ephemeralContainers": [
                    {"name": name, "image": image, "targetContainerName": "prefect-job"}
                    for name, image, _ in ephemeral
                ],
            },
            "status": {
                "ephemeralContainerStatuses": [
                    {"name": name, "state": {state: {}}} for name, _, state in ephemeral
                ]
            },
        }
    )


def test_reuse_by_name() -> None:
    assert reusable(_pod([]), "prefect-job", "debug:1") == (None, 1)
    done = [("pcd-doctor-prefect-job-1", "debug:1", "terminated"), ("debugger-x7k2p", "debug:1", "running")]
    assert reusable(_pod(done), "prefect-job", "debug:1") == (None, 2)
    running = [*done, ("pcd-doctor-prefect-job-2", "debug:1", "running")]
    assert reusable(_pod(running), "prefect-job", "debug:1") == ("pcd-doctor-prefect-job-2", 3)
    assert reusable(_pod(running), "prefect-job", "other:2") == (None, 3)


def test_rounds_by_the_nodes_timestamps() -> None:
    log = "\n".join(
        [
            "2026-11-30T09:00:00.5Z ",
            "2026-11-30T09:00:00.5Z @@PCD cycle 1",
            "2026-11-30T09:00:00.6Z ",
            "2026-11-30T09:00:00.6Z @@PCD file 1 1/stat",
            "2026-11-30T09:00:00.6Z 1 (python) S 0",
            "2026-11-30T09:00:01.123456789Z ",
            "2026-11-30T09:00:01.123456789Z @@PCD end",
            "2026-11-30T09:00:11Z ",
            "2026-11-30T09:00:11Z @@PCD cycle 2",
            "2026-11-30T09:00:11Z ",
            "2026-11-30T09:00:11Z @@PCD file 1 1/stat\x1c still one line",
        ]
    )
    rounds, last = read_rounds(log + "\n")

    assert [(r[0].second, r[1], r[2] is not None) for r in rounds] == [(0, 1, True), (11, 2, False)]
    assert rounds[0][2] is not None and "@@PCD file 1 1/stat\n1 (python) S 0\n" in rounds[0][2]
    assert last == datetime(2026, 11, 30, 9, 0, 11, tzinfo=timezone.utc)


def test_refusals_quote_the_api_and_say_what_to_change() -> None:
    disabled = KubeNotFound("x", 404, "NotFound", "the server could not find the requested resource")
    psa = KubeApiError(
        "x", 403, "Forbidden",
        'pods "p" is forbidden: violates PodSecurity "restricted:latest": non-default capabilities',
    )  # fmt: skip
    rbac = KubeApiError("x", 403, "Forbidden", 'pods "p" is forbidden: User "u" cannot patch resource')

    assert "does not serve ephemeral containers" in refusal(disabled, "n", "p")
    assert "node mode" in refusal(disabled, "n", "p")
    assert 'violates PodSecurity "restricted:latest"' in refusal(psa, "n", "p")
    assert "pod-security.kubernetes.io/enforce=privileged" in refusal(psa, "n", "p")
    assert "RBAC refused" in refusal(rbac, "n", "p") and "pods/ephemeralcontainers" in refusal(rbac, "n", "p")
