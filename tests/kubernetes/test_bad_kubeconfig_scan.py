"""A scan with a malformed kubeconfig still diagnoses every run; its Kubernetes runs say why not.

GIVEN the session's real Prefect server with its really stuck process runs, one more run in
Cancelling whose `infrastructure_pid` names a Kubernetes Job, and a kubeconfig that is not UTF-8,
has a certificate authority that is not PEM, or a client key of another certificate, WHEN
`scan --kubeconfig` runs, THEN it exits 1 (stuck runs), the Kubernetes run is `not_attachable`
naming the kubeconfig and the field, and the process runs get their verdicts (before: exit 4,
"internal error", and no verdict at all).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import clean_environ, run_cli
from tests.kubernetes.test_kubeconfig_malformed import malformed

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = [pytest.mark.server, pytest.mark.e2e]


class _RetryOn503(httpx.HTTPTransport):
    """The staged server's SQLite answers 503 while busy."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(20):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(0.25)
        return response


@pytest.fixture
def kubernetes_run(demo_environment: DemoEnvironment) -> Iterator[str]:
    """A run stuck in Cancelling on a Kubernetes Job (as prefect-kubernetes records it); deleted after."""
    api = httpx.Client(base_url=demo_environment.api_url + "/", transport=_RetryOn503())
    flow = api.post("flows/", json={"name": "pcd-bad-kubeconfig"}).raise_for_status().json()
    created = api.post(
        "flow_runs/", json={"flow_id": flow["id"], "name": "kube-bad-config", "state": {"type": "RUNNING"}}
    )
    run_id: str = created.raise_for_status().json()["id"]
    try:
        api.patch(
            f"flow_runs/{run_id}", json={"infrastructure_pid": "prefect-flows:etl-x7k2p"}
        ).raise_for_status()
        cancelling = {"state": {"type": "CANCELLING"}, "force": True}
        api.post(f"flow_runs/{run_id}/set_state", json=cancelling).raise_for_status()
        yield run_id
    finally:
        api.delete(f"flow_runs/{run_id}")
        api.close()


@pytest.mark.parametrize("case", ["not UTF-8", "CA data not PEM", "client key of another certificate"])
def test_a_scan_with_a_malformed_kubeconfig_diagnoses_every_other_run(
    case: str, demo_environment: DemoEnvironment, kubernetes_run: str, tmp_path: Path
) -> None:
    path, field = malformed(tmp_path)[case]
    env = clean_environ(
        PREFECT_API_URL=demo_environment.api_url, PREFECT_HOME=str(tmp_path), HOME=str(tmp_path)
    )
    done = run_cli(
        "scan",
        "--samples",
        "1",
        "--no-native",
        "--no-fleet",
        "--format",
        "json",
        "--kubeconfig",
        str(path),
        env=env,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    document: dict[str, Any] = json.loads(done.stdout)
    verdicts = {e["flow_run"]["id"]: e["verdict"] for e in document["runs"] if e["flow_run"]}

    kube = verdicts[kubernetes_run]
    assert kube["cause"] == "not_attachable", kube
    said = json.dumps(kube)
    assert str(path) in said and field in said, said

    for run in demo_environment.runs:
        if run.expected_state == "CANCELLING" and run.process_alive:
            assert verdicts[run.run_id]["cause"] == run.expected_cause.value, (
                run.scenario,
                verdicts[run.run_id],
            )
