"""API faults that a real server cannot be made to produce on demand, replayed with MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PAGE_SIZE, PrefectApi, cancelling_since
from prefect_cancel_doctor.clients.prefect_api.client import CANCELLING_PAGES_IN_FLIGHT
from prefect_cancel_doctor.clients.prefect_records import FlowRun, State, parse_states
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.errors import ApiRefused, ApiUnreachable, TargetError
from prefect_cancel_doctor.model import StateType


def api(handler: Callable[[httpx.Request], httpx.Response], **conn: str) -> PrefectApi:
    return PrefectApi(Connection("http://prefect.test/api", **conn), transport=httpx.MockTransport(handler))


def run(i: int, state: str = "CANCELLING", started: str | None = None) -> dict[str, object]:
    return {
        "id": f"run-{i:05d}",
        "name": f"r{i}",
        "state": {"type": state, "timestamp": "2026-01-01T00:00:00Z"},
        "start_time": started or f"2026-01-01T00:00:00.{i:06d}Z",
    }


def page(pages: list[list[dict[str, object]]], request: httpx.Request) -> httpx.Response:
    """The page a request's offset asks for; past the last one, none."""
    index = json.loads(request.content)["offset"] // PAGE_SIZE
    return httpx.Response(200, json=pages[index] if index < len(pages) else [])


def test_paging_reads_every_cancelling_run_and_filters_server_side() -> None:
    runs = [run(i) for i in range(PAGE_SIZE * 2 + 7)]
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return httpx.Response(200, json=runs[body["offset"] : body["offset"] + body["limit"]])

    found = api(handler).cancelling_runs()
    assert [r.id for r in found] == [r["id"] for r in runs]
    # The first page alone, then three at a time: at most two asked for past the last one.
    offsets = sorted(b["offset"] for b in bodies)
    assert offsets[:3] == [0, 200, 400]
    assert offsets[3:] in ([600], [600, 800])
    assert CANCELLING_PAGES_IN_FLIGHT == 3
    assert all(b["flow_runs"]["state"]["type"]["any_"] == ["CANCELLING"] for b in bodies)


def test_a_short_first_page_is_the_whole_listing() -> None:
    offsets = []

    def handler(request: httpx.Request) -> httpx.Response:
        offsets.append(json.loads(request.content)["offset"])
        return httpx.Response(200, json=[run(i) for i in range(PAGE_SIZE - 1)])

    assert len(api(handler).cancelling_runs()) == PAGE_SIZE - 1
    assert offsets == [0]


def test_a_page_refused_while_others_are_read_ahead_ends_the_listing_with_the_refusal() -> None:
    offsets = []

    def handler(request: httpx.Request) -> httpx.Response:
        offset = json.loads(request.content)["offset"]
        offsets.append(offset)
        if offset == 3 * PAGE_SIZE:
            return httpx.Response(500, text="boom")
        return httpx.Response(200, json=[run(offset + i) for i in range(PAGE_SIZE)])

    with pytest.raises(ApiRefused, match="500"):
        api(handler).cancelling_runs()
    # Pages are taken in order: nothing is asked for beyond what was in flight when 600 failed.
    assert max(offsets) <= (3 + CANCELLING_PAGES_IN_FLIGHT) * PAGE_SIZE


def test_a_run_shifting_between_pages_is_reported_once() -> None:
    pages = [[run(i) for i in range(PAGE_SIZE)], [run(PAGE_SIZE - 1), run(PAGE_SIZE)]]

    assert len(api(lambda request: page(pages, request)).cancelling_runs()) == PAGE_SIZE + 1


def test_runs_starting_at_one_moment_across_two_pages_are_asked_for_by_that_moment() -> None:
    # Prefect sorts START_TIME without a tie-breaker: a database may order runs that tie anew for each
    # page, so the page after could repeat one of them and skip another (run 200, never listed).
    moment = "2026-01-01T00:00:01Z"
    tied = [run(i, started=moment) for i in (199, 200)]
    pages = [[run(i) for i in range(PAGE_SIZE - 1)] + [tied[0]], [tied[0], run(201)]]
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append(body)
        start = body["flow_runs"].get("start_time")
        if start == {"after_": moment, "before_": moment}:
            return httpx.Response(200, json=tied)
        if start is not None:
            return httpx.Response(200, json=[])
        return page(pages, request)

    found = [r.id for r in api(handler).cancelling_runs()]
    assert sorted(found) == [f"run-{i:05d}" for i in range(202)]
    assert asked[0]["sort"] == "START_TIME_ASC"
    never_started = asked[-1]["flow_runs"]
    assert never_started["start_time"] == {"is_null_": True}
    assert never_started["expected_start_time"] == {"after_": moment, "before_": moment}


def test_runs_with_no_time_to_sort_by_across_two_pages_are_listed_again_by_id() -> None:
    timeless = {k: v for k, v in run(PAGE_SIZE).items() if k != "start_time"}
    pages = [[run(i) for i in range(PAGE_SIZE - 1)] + [timeless], [timeless]]
    sorts = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sorts.append((body["sort"], body["offset"]))
        return page(pages, request)

    assert len(api(handler).cancelling_runs()) == PAGE_SIZE
    listed, again = sorts[:4], sorts[4:]
    assert sorted(listed) == [("START_TIME_ASC", offset) for offset in (0, 200, 400, 600)]
    assert again == [("ID_DESC", 0), ("ID_DESC", 200)]


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


def test_429_is_retried_after_retry_after_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("prefect_cancel_doctor.clients.prefect_api.time.sleep", waits.append)
    answers = [
        httpx.Response(429, headers={"Retry-After": "3600"}),
        httpx.Response(429, headers={"Retry-After": "2"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(200, json=[run(1)])

    assert [r.id for r in api(handler).cancelling_runs()] == ["run-00001"]
    assert waits == [10.0, 2.0]


def test_a_server_that_keeps_answering_429_is_exit_3_after_bounded_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("prefect_cancel_doctor.clients.prefect_api.time.sleep", lambda _: None)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429)

    with pytest.raises(ApiRefused) as info:
        api(handler).cancelling_runs()
    assert info.value.exit_code == 3 and "rate limit" in str(info.value)
    assert len(calls) == 4


@pytest.mark.parametrize("body", [{"runs": []}, "not a list", [{"no": "id"}], [1, 2]])
def test_an_answer_of_the_wrong_shape_is_exit_3(body: object) -> None:
    with pytest.raises(ApiRefused) as info:
        api(lambda r: httpx.Response(200, json=body)).cancelling_runs()
    assert info.value.exit_code == 3


def test_an_echoed_key_and_escape_sequences_never_reach_the_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text=f"bad header {request.headers['Authorization']} \x1b[2J")

    with pytest.raises(ApiRefused) as info:
        api(handler, api_key="pnu_topsecret").cancelling_runs()
    assert "pnu_topsecret" not in str(info.value) and "\x1b" not in str(info.value)
    assert "<redacted>" in str(info.value) and "\\x1b[2J" in str(info.value)


def test_a_password_in_the_api_url_is_never_printed() -> None:
    client = PrefectApi(
        Connection("http://admin:hunter2@prefect.test/api"),
        transport=httpx.MockTransport(lambda r: httpx.Response(503)),
    )
    assert "hunter2" not in client.url
    with pytest.raises(ApiRefused) as info:
        client.cancelling_runs()
    assert "hunter2" not in str(info.value)


def test_an_unknown_run_id_is_no_flow_run_exit_2() -> None:
    for status in (404, 422):
        with pytest.raises(TargetError) as info:
            api(lambda r, status=status: httpx.Response(status)).flow_run("nope")
        assert info.value.exit_code == 2 and "no flow run nope" in str(info.value)
