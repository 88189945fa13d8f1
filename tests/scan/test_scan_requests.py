"""What a scan asks the API for, on the real server of the staged runs.

GIVEN the staged stuck runs and one more run in Cancelling whose process is
on another host, in a work pool of its own, WHEN the engine scans with a
transport that records every request, THEN the remote run is reported as not
attachable here without a request for its pool's workers, while the pools of
the runs diagnosed here are read, once each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.model import Cause
from prefect_cancel_doctor.scan.engine import Options, scan

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = pytest.mark.server

REMOTE_POOL = "pcd-remote-only-pool"


class RecordingTransport(httpx.HTTPTransport):
    """A real transport that notes the path of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


@pytest.fixture
def remote_run(demo_environment: DemoEnvironment) -> Iterator[str]:
    """A run in Cancelling, in a pool of its own, whose process runs on another host."""
    staged = demo_environment.run("sleep")
    with httpx.Client(base_url=demo_environment.api_url + "/", timeout=30) as http:

        def call(method: str, path: str, body: object = None) -> dict[str, object]:
            response = http.request(method, path, json=body)
            response.raise_for_status()
            return dict(response.json()) if response.content else {}

        flow_id = call("GET", f"flow_runs/{staged.run_id}")["flow_id"]
        if http.get(f"work_pools/{REMOTE_POOL}").status_code == 404:
            call("POST", "work_pools/", {"name": REMOTE_POOL, "type": "process"})
        deployment = call(
            "POST",
            "deployments/",
            {"name": "remote-only", "flow_id": flow_id, "work_pool_name": REMOTE_POOL},
        )["id"]
        run_id = str(call("POST", f"deployments/{deployment}/create_flow_run", {})["id"])
        try:
            call("POST", f"flow_runs/{run_id}/set_state", {"state": {"type": "RUNNING"}, "force": True})
            call("PATCH", f"flow_runs/{run_id}", {"infrastructure_pid": "some-other-host:4242"})
            call("POST", f"flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
            yield run_id
        finally:
            # Leave nothing stuck for the other tests of the session.
            call("POST", f"flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLED"}, "force": True})


def test_workers_are_read_only_for_the_pools_of_runs_diagnosed_here(
    demo_environment: DemoEnvironment, remote_run: str
) -> None:
    transport = RecordingTransport()
    with PrefectApi(Connection(demo_environment.api_url), transport=transport) as api:
        report = scan(api, Options(samples=1, native=False))

    verdicts = {d.flow_run.id: d for d in report.runs if d.flow_run}
    remote = verdicts[remote_run]
    assert remote.verdict.cause is Cause.NOT_ATTACHABLE
    assert "some-other-host" in remote.verdict.summary + " ".join(remote.verdict.evidence)
    assert remote.flow_run is not None and remote.flow_run.workers == ()

    worker_reads = Counter(
        path.split("/work_pools/", 1)[1].split("/", 1)[0] for path in transport.paths if "/workers/" in path
    )
    staged_pool = demo_environment.run("sleep").pool_name
    assert REMOTE_POOL not in worker_reads
    assert worker_reads[staged_pool] == 1
    local = verdicts[demo_environment.run("sleep").run_id]
    assert local.flow_run is not None and local.flow_run.workers
