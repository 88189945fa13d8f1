"""API faults that a real server cannot be made to produce on demand, replayed with MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from prefect_cancel_doctor.errors import ApiRefused, ApiUnreachable
from prefect_cancel_doctor.model import StateType
from prefect_cancel_doctor.prefect_api import PAGE_SIZE, PrefectApi, cancelling_since
from prefect_cancel_doctor.prefect_records import FlowRun, State, parse_states
from prefect_cancel_doctor.settings import Connection


def api(handler: Callable[[httpx.Request], httpx.Response], **conn: str) -> PrefectApi:
    return PrefectApi(Connection("http://prefect.test/api", **conn), transport=httpx.MockTransport(handler))


def run(i: int, state: str = "CANCELLING") -> dict[str, object]:
    return {
        "id": f"run-{i:05d}",
        "name": f"r{i}",
        "state": {"type": state, "timestamp": "2026-01-01T00:00:00Z"},
    }


def test_paging_reads_every_cancelling_run_and_filters_server_side() -> None:
    runs = [run(i) for i in range(PAGE_SIZE * 2 + 7)]
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return httpx.Response(200, json=runs[body["offset"] : body["offset"] + body["limit"]])

    found = api(handler).cancelling_runs()
    assert [r.id for r in found] == [r["id"] for r in runs]
    assert len(bodies) == 3
    assert all(b["flow_runs"]["state"]["type"]["any_"] == ["CANCELLING"] for b in bodies)


def test_a_run_shifting_between_pages_is_reported_once() -> None:
    pages = [[run(i) for i in range(PAGE_SIZE)], [run(PAGE_SIZE - 1), run(PAGE_SIZE)]]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[json.loads(request.content)["offset"] // PAGE_SIZE])

    assert len(api(handler).cancelling_runs()) == PAGE_SIZE + 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_refusals_with_a_hint_and_exit_3(status: int) -> None:
    with pytest.raises(ApiRefused) as info:
        api(lambda r: httpx.Response(status), api_key="pnu_topsecret").cancelling_runs()
    assert info.value.exit_code == 3
    assert "PREFECT_API_KEY" in (info.value.hint or "")
    assert "pnu_topsecret" not in str(info.value)


def test_server_error_is_a_refusal() -> None:
    with pytest.raises(ApiRefused, match="500"):
        api(lambda r: httpx.Response(500, text="boom")).cancelling_runs()


def test_html_instead_of_json_says_it_is_not_the_api() -> None:
    with pytest.raises(ApiRefused, match="not JSON"):
        api(lambda r: httpx.Response(200, text="<html>Prefect UI</html>")).cancelling_runs()


def test_connection_failure_is_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ApiUnreachable) as info:
        api(handler).cancelling_runs()
    assert info.value.exit_code == 3


def test_bearer_key_for_cloud_and_basic_auth_for_self_hosted() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json=[])

    api(handler, api_key="pnu_k").cancelling_runs()
    api(handler, auth_string="admin:pw").cancelling_runs()
    assert seen == ["Bearer pnu_k", "Basic YWRtaW46cHc="]


def test_cancelling_since_is_the_start_of_the_latest_cancelling_stretch() -> None:
    history = [
        {"type": "RUNNING", "timestamp": "t1"},
        {"type": "CANCELLING", "timestamp": "t2"},
        {"type": "RUNNING", "timestamp": "t3"},
        {"type": "CANCELLING", "timestamp": "t4"},
        {"type": "CANCELLING", "timestamp": "t5"},
    ]
    states = parse_states(history)
    assert cancelling_since(FlowRun("r", "r"), states) == "t4"
    assert (
        cancelling_since(FlowRun("r", "r"), [*states, State(StateType.CANCELLED, "", timestamp="t6")]) == "t4"
    )
