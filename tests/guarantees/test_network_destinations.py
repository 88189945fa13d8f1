"""A run's data never chooses a network destination: only the operator's configuration does.

`infrastructure_pid` is written by whoever runs a deployment. Runs whose
`infrastructure_pid` names other hosts are scanned with every outgoing
connection recorded: the only destinations are the configured Prefect API and
the configured Docker engine (the default socket here).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.model import Cause
from prefect_cancel_doctor.scan.engine import Options, scan

HEX = "ab" * 32
HOSTILE = [
    f"http://10.0.0.5:8080:{HEX}",
    f"https://evil.example:443:{HEX}",
    f"tcp://10.0.0.5:2375:{HEX}",
    "10.0.0.5:4242",
    "evil.example:4242",
    f"unix:///tmp/evil.sock:{HEX}",
]


def _run(index: int, infrastructure_pid: str) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{index:012d}",
        "name": f"hostile-{index}",
        "state": {"type": "CANCELLING", "name": "Cancelling", "timestamp": "2026-11-30T00:00:00Z"},
        "start_time": "2026-11-30T00:00:00Z",
        "infrastructure_pid": infrastructure_pid,
    }


def _api() -> PrefectApi:
    runs = [_run(i, raw) for i, raw in enumerate(HOSTILE)]

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        if request.url.path.endswith("/flow_runs/filter"):
            cancelling = "CANCELLING" in json.dumps(body.get("flow_runs", {}))
            return httpx.Response(200, json=runs if cancelling and body.get("offset", 0) == 0 else [])
        return httpx.Response(200, json=[])

    return PrefectApi(Connection("http://prefect.test/api"), transport=httpx.MockTransport(handler))


def test_hostile_infrastructure_pids_open_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[object] = []
    real_connect = socket.socket.connect

    def recording_connect(self: socket.socket, address: Any) -> None:
        dialled.append(address)
        if self.family != socket.AF_UNIX or address != "/var/run/docker.sock":
            raise ConnectionRefusedError(f"test: no connection to {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with _api() as api:
        report = scan(api, Options(samples=1, native=False))
    assert all(address == "/var/run/docker.sock" for address in dialled), dialled
    verdicts = {d.flow_run.infrastructure_pid: d.verdict for d in report.runs if d.flow_run}
    assert set(verdicts) == set(HOSTILE)
    for raw in HOSTILE[:5]:
        assert verdicts[raw].cause == Cause.NOT_ATTACHABLE, (raw, verdicts[raw].summary)
