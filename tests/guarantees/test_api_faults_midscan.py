"""The API changing under a scan: a run leaving Cancelling mid-scan, the server going away mid-scan.

Replayed with httpx.MockTransport (a real server cannot be made to stop between two
given requests on demand); the scan is the real engine.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.errors import ApiUnreachable
from prefect_cancel_doctor.scan.engine import Options, scan

RUN = {
    "id": "00000000-0000-0000-0000-000000000001",
    "name": "leaving",
    "state": {"type": "CANCELLING", "name": "Cancelling", "timestamp": "2026-11-30T00:00:00Z"},
    "start_time": "2026-11-30T00:00:00Z",
    "infrastructure_pid": "4194000",  # no such process here
    "work_pool_name": "pool",
}


def _api(handler: Any) -> PrefectApi:
    return PrefectApi(Connection("http://prefect.test/api"), transport=httpx.MockTransport(handler))


def test_a_run_that_leaves_cancelling_mid_scan_is_reported_as_listed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        if request.url.path.endswith("/flow_runs/filter"):
            listing = "CANCELLING" in json.dumps(body.get("flow_runs", {}))
            return httpx.Response(200, json=[RUN] if listing and body.get("offset", 0) == 0 else [])
        if request.url.path.endswith("/flow_run_states/"):  # by now it is Cancelled
            cancelled = {"type": "CANCELLED", "name": "Cancelled", "timestamp": "2026-11-30T00:01:00Z"}
            return httpx.Response(200, json=[RUN["state"], cancelled])
        return httpx.Response(200, json=[])

    with _api(handler) as api:
        report = scan(api, Options(samples=1, native=False))
    (diagnosis,) = report.runs
    assert diagnosis.flow_run is not None and diagnosis.flow_run.state_type == "CANCELLING"
    assert [entry.what for entry in diagnosis.timeline][-1] == "entered Cancelled"


def test_a_server_gone_mid_scan_is_one_api_error() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) > 2:
            raise httpx.ConnectError("connection refused")
        body = json.loads(request.content or b"{}")
        listing = "CANCELLING" in json.dumps(body.get("flow_runs", {}))
        return httpx.Response(200, json=[RUN] if listing and body.get("offset", 0) == 0 else [])

    with _api(handler) as api, pytest.raises(ApiUnreachable) as info:
        scan(api, Options(samples=1, native=False))
    assert info.value.exit_code == 3 and "cannot reach the Prefect API" in str(info.value)
