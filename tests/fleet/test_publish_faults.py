"""Publishing refused, replayed with httpx.MockTransport: the scan's verdicts are still shown, the
failure is named, the exit code is the scan's.

A real server does not refuse events on demand (a read-only key is Prefect Cloud's, a
413 a proxy's); tests/fleet/test_publish_server.py publishes to a real one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from prefect_cancel_doctor import cli
from prefect_cancel_doctor.clients import prefect_api
from prefect_cancel_doctor.clients.prefect_api import RETRIES, PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.fleet import publish
from prefect_cancel_doctor.fleet.publish import HOST_EVENT, VERDICT_EVENT, Seen
from prefect_cancel_doctor.scan.engine import Options, scan

RUN_ID = "00000000-0000-4000-8000-00000000a001"
RUN = {
    "id": RUN_ID,
    "name": "stuck-otter",
    "flow_id": "00000000-0000-4000-8000-00000000f001",
    "deployment_id": "00000000-0000-4000-8000-00000000d001",
    "state": {"type": "CANCELLING", "name": "Cancelling", "timestamp": "2026-11-30T00:00:00Z"},
    "start_time": "2026-11-30T00:00:00Z",
    "infrastructure_pid": "4194000",  # no such process here
    "work_pool_name": "pool",
    "labels": {"prefect.flow.id": "00000000-0000-4000-8000-00000000f001"},
}
SEEN = Seen("node-7", ("pool",), ())
KEY = "pnu_readonlysecret"

Handler = Callable[[httpx.Request], httpx.Response]


class FakePrefect:
    """The API a scan and its publication read and write; `/events` answers what `events` says."""

    def __init__(self, events: Handler | None = None) -> None:
        self.events = events or (lambda request: httpx.Response(204))
        self.requests: list[tuple[str, str]] = []
        self.posted: list[list[dict[str, Any]]] = []
        self.artifacts: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api")
        self.requests.append((request.method, path))
        body = json.loads(request.content or b"null")
        if path == "/events" and request.method == "POST":
            response = self.events(request)
            if response.status_code < 300:
                self.posted.append(body)
            return response
        if path == "/flow_runs/filter":
            listing = "CANCELLING" in json.dumps(body.get("flow_runs", {}))
            return httpx.Response(200, json=[RUN] if listing and body.get("offset", 0) == 0 else [])
        if path == "/flow_run_states/":
            return httpx.Response(200, json=[RUN["state"]])
        if path == "/work_pools/filter":
            return httpx.Response(200, json=[{"id": "00000000-0000-4000-8000-0000000000b1", "name": "pool"}])
        if path == "/artifacts/latest/filter":
            latest = [{"id": k, "latest_id": a["id"], **a} for k, a in self.artifacts.items()]
            return httpx.Response(200, json=latest)
        if path == "/artifacts/" and request.method == "POST":
            artifact = {**body, "id": f"a-{len(self.artifacts)}"}
            self.artifacts[body["key"]] = artifact
            return httpx.Response(201, json=artifact)
        if path.startswith("/artifacts/") and request.method == "PATCH":
            return httpx.Response(204)
        return httpx.Response(200, json=[])


def _api(fake: FakePrefect, **connection: Any) -> PrefectApi:
    return PrefectApi(
        Connection("http://prefect.test/api", **connection), transport=httpx.MockTransport(fake)
    )


def _publish(fake: FakePrefect, **connection: Any) -> publish.PublishOutcome:
    with _api(fake, **connection) as api:
        report = scan(api, Options(samples=1, native=False))
        return publish.publish(api, report, seen=SEEN)


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's backoff between retries, without the waiting."""
    monkeypatch.setattr(prefect_api.time, "sleep", lambda seconds: None)


def test_one_post_per_scan_carries_every_verdict_then_the_hosts_event() -> None:
    fake = FakePrefect()
    outcome = _publish(fake)
    assert outcome.errors == [] and outcome.events == 1 and outcome.artifacts == 1
    assert [r for r in fake.requests if r == ("POST", "/events")] == [("POST", "/events")]
    (batch,) = fake.posted
    assert [e["event"] for e in batch] == [VERDICT_EVENT, HOST_EVENT]
    assert batch[0]["payload"]["cause"] == "infrastructure_gone"
    assert batch[0]["related"][0]["prefect.resource.id"] == f"prefect.flow-run.{RUN_ID}"
    (artifact,) = fake.artifacts.values()
    assert artifact["key"] == "cancel-doctor-00000000-0000" and artifact["flow_run_id"] == RUN_ID
    again = _publish(fake)  # the run's artifact is replaced, not added to
    assert again.artifacts == 1 and len(fake.artifacts) == 1
    assert ("PATCH", "/artifacts/a-0") in fake.requests


def test_a_read_only_key_is_named_and_the_artifacts_are_still_tried() -> None:
    fake = FakePrefect(lambda request: httpx.Response(403, json={"detail": "Forbidden"}))
    outcome = _publish(fake, api_key=KEY)
    assert outcome.events == 0
    (error,) = outcome.errors
    assert error.startswith("not published: 1 verdict event(s) (POST /events failed:")
    assert "403" in error and "read-only" in error
    assert KEY not in error
    assert outcome.artifacts == 1


def test_a_body_too_large_for_a_proxy_is_named() -> None:
    fake = FakePrefect(lambda request: httpx.Response(413, text="Request Entity Too Large"))
    (error,) = _publish(fake).errors
    assert "413" in error and "size" in error


def test_a_server_error_is_retried_with_backoff_then_named() -> None:
    fake = FakePrefect(lambda request: httpx.Response(503, text="busy"))
    (error,) = _publish(fake).errors
    assert "503" in error
    assert fake.requests.count(("POST", "/events")) == RETRIES + 1


def test_a_server_error_that_clears_is_published_after_a_retry() -> None:
    answers = iter([httpx.Response(502), httpx.Response(204)])
    fake = FakePrefect(lambda request: next(answers))
    outcome = _publish(fake)
    assert outcome.errors == [] and outcome.events == 1
    assert fake.requests.count(("POST", "/events")) == 2


@pytest.mark.parametrize("status", [500, 422])
def test_a_refused_body_is_named(status: int) -> None:
    fake = FakePrefect(lambda request: httpx.Response(status, json={"detail": "no"}))
    (error,) = _publish(fake).errors
    assert f"error {status}" in error


def _scan_cli(
    fake: FakePrefect, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, dict[str, Any], str]:
    monkeypatch.setattr(cli, "_api", lambda url, key, profile: _api(fake))
    monkeypatch.setattr(publish, "seen_here", lambda host, proc_root="/proc": Seen(host, ("pool",)))
    result = CliRunner().invoke(cli.app, ["scan", "--format", "json", "--samples", "1", "--no-native", *args])
    return result.exit_code, json.loads(result.stdout), result.stderr


@pytest.mark.parametrize("status", [403, 413, 503])
def test_a_scan_that_cannot_publish_shows_its_verdicts_says_so_and_keeps_its_exit_code(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePrefect(lambda request: httpx.Response(status))
    code, document, stderr = _scan_cli(fake, monkeypatch, "--publish")
    plain_code, plain, _ = _scan_cli(FakePrefect(), monkeypatch)
    assert code == plain_code == 1
    (run,) = document["runs"]
    assert run["verdict"]["cause"] == plain["runs"][0]["verdict"]["cause"] == "infrastructure_gone"
    assert any(
        e.startswith("not published: 1 verdict event(s)") and str(status) in e for e in document["errors"]
    )
    assert "warning: not published: 1 verdict event(s)" in stderr
    assert "published 0 verdict event(s), 1 artifact(s) as host" in stderr


def test_without_publish_a_scan_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePrefect()
    _scan_cli(fake, monkeypatch)
    writes = [(m, p) for m, p in fake.requests if m != "GET" and not p.endswith("/filter")]
    assert writes == []


def test_agent_once_scans_and_publishes_as_its_host(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePrefect()
    monkeypatch.setattr(cli, "_api", lambda url, key, profile: _api(fake))
    monkeypatch.setattr(publish, "seen_here", lambda host, proc_root="/proc": Seen(host, ("pool",)))
    monkeypatch.delenv("PCD_HOST", raising=False)
    result = CliRunner().invoke(cli.app, ["agent", "--once", "--host", "node-7", "--samples", "1"])
    assert result.exit_code == 1  # as `scan`: a run is stuck
    assert "published 1 verdict event(s), 1 artifact(s) as host node-7" in result.stderr
    (batch,) = fake.posted
    assert {e["resource"]["prefect.resource.id"] for e in batch} == {"prefect-cancel-doctor.host.node-7"}
    assert "infrastructure_gone" in result.stdout  # the verdicts are shown too


def test_the_agents_retry_line_names_the_failure_without_a_body_or_a_password() -> None:
    from prefect_cancel_doctor.agent import describe, transient

    request = httpx.Request("POST", "http://admin:s3cret@prefect.internal/api/deployments/")
    unreachable = httpx.ConnectError("cannot reach http://admin:s3cret@prefect.internal/api", request=request)
    assert transient(unreachable) and "s3cret" not in describe(unreachable)
    locked = httpx.HTTPStatusError(
        "500", request=request, response=httpx.Response(500, text="echo: s3cret", request=request)
    )
    assert transient(locked) and describe(locked) == "HTTP 500 from /api/deployments/"
    refused = httpx.HTTPStatusError("401", request=request, response=httpx.Response(401, request=request))
    assert not transient(refused)
