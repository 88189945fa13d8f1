"""Listing the runs in Cancelling on a real Prefect server: by start time, ties read whole.

`PrefectApi.cancelling_runs` pages by Prefect's START_TIME sort (indexed with the state type since
Prefect 3.9), which has no tie-breaker. Runs that were never started sort by their expected start:
many scheduled for the same moment and then cancelled tie across a page boundary, and are asked for
by that moment. The server is started once for this module (SQLite, a temporary PREFECT_HOME).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PAGE_SIZE, PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from tests.health.history import Api

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.harness import LocalPrefect

pytestmark = pytest.mark.server

MOMENT = "2026-12-01T06:00:00Z"
TIED = PAGE_SIZE + 5


class _Recording(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/flow_runs/filter"):
            self.bodies.append(json.loads(request.content))
        return super().handle_request(request)


@pytest.fixture(scope="module")
def tied_server() -> Iterator[tuple[LocalPrefect, set[str]]]:
    """A server with TIED runs in Cancelling scheduled for MOMENT and never started, and two that ran.

    A Scheduled run cancelled goes straight to Cancelled (the server's rule for a run with no
    infrastructure): these were submitted (Pending) when the cancel came, as a worker leaves them."""
    pytest.importorskip("prefect", reason="the server is Prefect's own (pip install -e '.[test]')")
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    with LocalPrefect() as server:
        # Writes tried again while SQLite's one writer is busy (the server answers 503).
        api = Api(server.api_url)
        flow_id = api.call("POST", "flows/", {"name": "ties"})["id"]
        ids = set()
        for i in range(TIED + 2):
            scheduled = {"type": "SCHEDULED", "state_details": {"scheduled_time": MOMENT}}
            body = {"flow_id": flow_id, "name": f"tie-{i}", "state": scheduled}
            run_id = api.call("POST", "flow_runs/", body)["id"]
            # Submitted (Pending: not started), or for the last two, running: their start time sorts them.
            started = {"type": "RUNNING" if i >= TIED else "PENDING"}
            api.call("POST", f"flow_runs/{run_id}/set_state", {"state": started, "force": True})
            api.call(
                "POST", f"flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLING"}, "force": True}
            )
            ids.add(run_id)
        api.close()
        yield server, ids


def test_runs_tied_across_a_page_boundary_are_all_listed(tied_server: tuple[LocalPrefect, set[str]]) -> None:
    server, ids = tied_server
    transport = _Recording()
    runs = PrefectApi(Connection(server.api_url), transport=transport).cancelling_runs()
    assert {r.id for r in runs} == ids
    assert len(runs) == len(ids)
    assert transport.bodies[0]["sort"] == "START_TIME_ASC"
    # The tie straddled the first page's end: the never-started runs were asked for by their moment.
    by_moment = [b for b in transport.bodies if "expected_start_time" in b["flow_runs"]]
    assert by_moment, "no request asked for the tied runs by their moment"
    asked = by_moment[0]["flow_runs"]["expected_start_time"]
    assert asked["after_"] == asked["before_"]


def test_asking_by_the_moment_a_server_returned_finds_every_run_tied_there(
    tied_server: tuple[LocalPrefect, set[str]],
) -> None:
    server, _ = tied_server
    never_started = {"state": {"type": {"any_": ["CANCELLING"]}}, "start_time": {"is_null_": True}}
    body = {"flow_runs": never_started, "limit": 1}
    returned = httpx.post(f"{server.api_url}/flow_runs/filter", json=body, timeout=60).json()[0]
    # The moment as the server wrote it back compares equal to its own column on both bounds.
    moment = returned["expected_start_time"]
    found = PrefectApi(Connection(server.api_url))._cancelling_at(moment)
    assert len({run["id"] for run in found}) == TIED
