"""Reading the history through the API, against an in-memory fake server (httpx.MockTransport).

What a real server cannot be made to show on demand: a page token with a '+'
in it, an end state whose event name is not a known one, a server without an
events API, and how the number of requests grows with the number of runs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PrefectApi, _page_token
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.errors import ApiRefused
from prefect_cancel_doctor.health.build import build_health_report
from prefect_cancel_doctor.health.model import Outcome
from prefect_cancel_doctor.health.options import HealthOptions

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
TIMEOUT = "Flow run cancellation timed out; marked this flow run as Cancelled."


def iso(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


class FakeServer:
    """Just enough of the Prefect REST API: runs, their state histories, and the events they emit."""

    def __init__(self, events_api: bool = True, event_counts: bool = True) -> None:
        self.events_api = events_api
        #: `POST /events/count-by/resource` (else 404: every Cancelling event is read).
        self.event_counts = event_counts
        self.runs: dict[str, dict[str, Any]] = {}
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens: list[str] = []
        #: The filters of `POST /events/filter`.
        self.event_filters: list[dict[str, Any]] = []

    def add(
        self, run_id: str, states: Iterable[tuple[str, float, str | None, str | None]], worker: str = "w1"
    ) -> None:
        """A run and its history: (state type, seconds ago, message, state name)."""
        history = [
            {"type": t, "timestamp": iso(ago), "message": msg, "name": name or t.title()}
            for t, ago, msg, name in states
        ]
        self.histories[run_id] = history
        self.runs[run_id] = {
            "id": run_id,
            "name": f"run-{run_id}",
            "flow_id": "f1",
            "deployment_id": "d1",
            "work_pool_name": "pool",
            "labels": {"prefect.worker.name": worker},
            "state": history[-1],
            "infrastructure_pid": None,
        }

    def events(self) -> list[dict[str, Any]]:
        out = []
        for run_id, history in self.histories.items():
            previous = None
            for state in history:
                out.append(
                    {
                        "id": f"{run_id}-{state['timestamp']}",
                        "occurred": state["timestamp"],
                        "event": f"prefect.flow-run.{state['name']}",
                        "resource": {
                            "prefect.resource.id": f"prefect.flow-run.{run_id}",
                            "prefect.resource.name": f"run-{run_id}",
                            "prefect.state-type": state["type"],
                            "prefect.state-name": state["name"],
                        },
                        "related": [
                            {"prefect.resource.role": "flow", "prefect.resource.name": "etl"},
                            {"prefect.resource.role": "deployment", "prefect.resource.name": "nightly"},
                            {"prefect.resource.role": "work-pool", "prefect.resource.name": "pool"},
                        ],
                        "payload": {
                            "initial_state": {"type": previous} if previous else None,
                            "validated_state": {"type": state["type"], "message": state["message"]},
                        },
                    }
                )
                previous = state["type"]
        return sorted(out, key=lambda e: e["occurred"])

    def _filter_events(self, f: dict[str, Any]) -> list[dict[str, Any]]:
        since, until = f["occurred"]["since"], f["occurred"]["until"]
        prefixes = (f.get("event") or {}).get("prefix") or [""]
        names = (f.get("event") or {}).get("name")
        ids = set((f.get("resource") or {}).get("id") or [])
        return [
            e
            for e in self.events()
            if since <= e["occurred"] <= until
            and any(e["event"].startswith(p) for p in prefixes)
            and (names is None or e["event"] in names)
            and (not ids or e["resource"]["prefect.resource.id"] in ids)
        ]

    def _page(self, f: dict[str, Any], offset: int) -> dict[str, Any]:
        matching = self._filter_events(f)
        page = matching[offset : offset + 50]
        next_page = None
        if offset + 50 < len(matching):
            # Like the server: base64 of a JSON token, not URL-encoded; the '+' is deliberate.
            token = base64.b64encode(
                json.dumps({"filter": f, "offset": offset + 50, "pad": "??>"}).encode()
            ).decode()
            token = "+" + token
            next_page = f"http://elsewhere:4200/api/events/filter/next?page-token={token}"
        return {"events": page, "total": len(matching), "next_page": next_page}

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/")
        self.requests.append((request.method, path))
        body = json.loads(request.content) if request.content else {}
        if path == "admin/settings":
            return httpx.Response(200, json={"server": {"events": {"retention_period": "P7D"}}})
        if path == "events/filter":
            if not self.events_api:
                return httpx.Response(404, json={"detail": "Not Found"})
            self.event_filters.append(body["filter"])
            return httpx.Response(200, json=self._page(body["filter"], 0))
        if path == "events/count-by/resource":
            if not self.events_api or not self.event_counts:
                return httpx.Response(404, json={"detail": "Not Found"})
            rows: dict[str, dict[str, Any]] = {}
            for e in self._filter_events(body["filter"]):
                resource = e["resource"]
                row = rows.setdefault(
                    resource["prefect.resource.id"],
                    {"value": resource["prefect.resource.id"], "label": resource["prefect.resource.name"],
                     "count": 0, "start_time": e["occurred"], "end_time": e["occurred"]},
                )  # fmt: skip
                row["count"] += 1
                row["end_time"] = e["occurred"]
            return httpx.Response(200, json=sorted(rows.values(), key=lambda r: (-r["count"], r["label"])))
        if path == "events/filter/next":
            raw = parse_qs(urlsplit(str(request.url)).query)["page-token"][0]
            self.tokens.append(raw)
            token = json.loads(base64.b64decode(raw[1:]))
            return httpx.Response(200, json=self._page(token["filter"], token["offset"]))
        if path == "flow_runs/filter":
            f = body.get("flow_runs") or {}
            runs = list(self.runs.values())
            if "id" in f:
                runs = [r for r in runs if r["id"] in f["id"]["any_"]]
            if "state" in f:
                runs = [r for r in runs if r["state"]["type"] in f["state"]["type"]["any_"]]
            if "parent_flow_run_id" in f:
                runs = []
            return httpx.Response(
                200, json=runs[body.get("offset", 0) : body.get("offset", 0) + body["limit"]]
            )
        if path == "flow_run_states/":
            return httpx.Response(200, json=self.histories[request.url.params["flow_run_id"]])
        if path in ("flows/filter", "deployments/filter"):
            name = {"flows/filter": ("f1", "etl"), "deployments/filter": ("d1", "nightly")}[path]
            return httpx.Response(
                200, json=[{"id": name[0], "name": name[1]}] if body.get("offset", 0) == 0 else []
            )
        if path == "work_pools/filter":
            return httpx.Response(200, json=[])
        if path.startswith("work_pools/"):
            return httpx.Response(404, json={"detail": "Not Found"})
        raise AssertionError(f"unexpected request {request.method} {path}")


def report_from(server: FakeServer, since: timedelta = timedelta(hours=1)) -> Any:
    api = PrefectApi(Connection("http://prefect.test/api"), transport=httpx.MockTransport(server.handle))
    options = HealthOptions(since=since, window_label="1h", slow=timedelta(seconds=60), sample=False)
    return build_health_report(api, options, now=NOW)


def test_page_token_is_taken_raw_and_sent_encoded() -> None:
    assert _page_token("http://x/api/events/filter/next?page-token=a+b/c==") == "a+b/c=="
    assert _page_token(None) is None and _page_token("http://x/") is None
    server = FakeServer(event_counts=False)  # every Cancelling event of the window, paged
    for i in range(120):
        server.add(
            f"r{i:03d}",
            [
                ("RUNNING", 600, None, None),
                ("CANCELLING", 500 - i, None, None),
                ("CANCELLED", 400 - i, None, None),
            ],
        )
    report = report_from(server)
    assert report.fleet.requested == 120 and report.fleet.cancelled == 120
    # Two next pages of Cancelling events; the '+' reached the server as a '+', not a space.
    assert server.tokens and all(t.startswith("+") for t in server.tokens)
    assert report.fleet.time_to_cancel.p50 == pytest.approx(100.0)


def test_outcomes_and_the_history_fallback() -> None:
    server = FakeServer()
    server.add(
        "quick",
        [("RUNNING", 900, None, None), ("CANCELLING", 800, None, None), ("CANCELLED", 799.5, None, None)],
    )
    server.add(
        "timeout",
        [("RUNNING", 900, None, None), ("CANCELLING", 700, None, None), ("CANCELLED", 400, TIMEOUT, None)],
    )
    server.add(
        "ignored",
        [("RUNNING", 900, None, None), ("CANCELLING", 600, None, None), ("COMPLETED", 590, None, None)],
    )
    server.add("stuck", [("RUNNING", 900, None, None), ("CANCELLING", 300, None, None)])
    # Ended by a state whose name no end-event prefix knows: read from its history.
    server.add(
        "custom",
        [("RUNNING", 900, None, None), ("CANCELLING", 200, None, None), ("CANCELLED", 150, None, "Aborted")],
    )
    # Cancelled before the window: not counted.
    server.add(
        "old",
        [("RUNNING", 9000, None, None), ("CANCELLING", 8000, None, None), ("CANCELLED", 7000, None, None)],
    )
    # Cancelled twice in the window: rescheduled after the first cancel, then cancelled again.
    server.add(
        "twice",
        [
            *(("RUNNING", 900, None, None), ("CANCELLING", 850, None, None)),
            ("SCHEDULED", 840, None, "AwaitingRetry"),
            *(("RUNNING", 830, None, None), ("CANCELLING", 820, None, None), ("CANCELLED", 810, None, None)),
        ],
    )
    report = report_from(server)
    f = report.fleet
    assert (f.requested, f.cancelled, f.timed_out, f.ignored, f.cancelling, f.other) == (7, 3, 1, 1, 1, 1)
    assert [c.flow_run_id for c in report.suspected_orphans] == ["timeout"]
    assert report.suspected_orphans[0].seconds == pytest.approx(300.0)
    assert [c.flow_run_id for c in report.ignored_cancels] == ["ignored"]
    assert [s.flow_run.id for s in report.stuck] == ["stuck"] and report.stuck[0].sampled is False
    # Only the runs without an end event had their history read: the rescheduled one and "custom".
    assert report.source.history_reads == 2
    assert report.by_deployment[0].name == "etl/nightly"


def test_without_an_events_api_cancelled_runs_are_read_one_by_one() -> None:
    server = FakeServer(events_api=False)
    server.add(
        "a", [("RUNNING", 900, None, None), ("CANCELLING", 800, None, None), ("CANCELLED", 790, None, None)]
    )
    server.runs["a"]["end_time"] = iso(790)
    server.add(
        "b",
        [("RUNNING", 900, None, None), ("CANCELLING", 800, None, None), ("CANCELLED", 500, TIMEOUT, None)],
    )
    report = report_from(server)
    assert report.source.method == "runs"
    assert (report.fleet.cancelled, report.fleet.timed_out) == (1, 1)
    assert any("no events API" in note for note in report.source.notes)


@pytest.mark.parametrize("runs", [100, 400])
def test_requests_grow_with_the_cancelled_runs(runs: int) -> None:
    server = FakeServer()
    for i in range(runs):
        server.add(
            f"r{i:04d}",
            [
                ("RUNNING", 3000, None, None),
                ("CANCELLING", 2000 - i, None, None),
                ("CANCELLED", 1900 - i, None, None),
            ],
        )
    report = report_from(server)
    assert report.fleet.requested == runs
    pages = -(-runs // 50)
    # Cancelling events (one page per 50), their ends (one query per 50 runs), the runs (200 a page).
    assert report.source.requests <= 2 * pages + -(-runs // 200) + 12
    assert report.source.history_reads == 0


def test_a_window_beyond_the_event_retention_is_said() -> None:
    server = FakeServer()
    report = report_from(server, since=timedelta(days=30))
    assert any("event retention" in note for note in report.source.notes)


def test_a_busy_window_is_read_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect_cancel_doctor.health.history as history

    monkeypatch.setattr(history, "SLICE_EVENTS", 60)
    server = FakeServer(event_counts=False)  # with them, these runs' events are asked for by id
    for i in range(300):
        # Ten runs per second of the window, some exactly on a slice boundary.
        server.add(f"r{i:04d}", [("RUNNING", 3000, None, None), ("CANCELLING", 1000 - i / 10, None, None),
                                ("CANCELLED", 900, None, None)])  # fmt: skip
    report = report_from(server)
    assert report.fleet.requested == 300 and report.fleet.cancelled == 300
    assert report.source.cancelling_events == 300  # none read twice
    first_pages = [p for m, p in server.requests if p == "events/filter"]
    assert len(first_pages) > 300 // 50  # the window was cut: more first pages than one query needs


def stuck_and_ended() -> FakeServer:
    server = FakeServer()
    for i in range(120):  # in Cancelling since their one request of the window
        server.add(f"s{i:03d}", [("RUNNING", 3000, None, None), ("CANCELLING", 2000 - i, None, None)])
    for i in range(30):
        server.add(f"e{i:03d}", [("RUNNING", 3000, None, None), ("CANCELLING", 2000 - i, None, None),
                                ("CANCELLED", 1900 - i, None, None)])  # fmt: skip
    # Cancelled, restarted and cancelled again: two requests, the first ended.
    server.add("again", [("RUNNING", 3000, None, None), ("CANCELLING", 2500, None, None),
                         ("CANCELLED", 2400, None, None), ("RUNNING", 2300, None, None),
                         ("CANCELLING", 2200, None, None)])  # fmt: skip
    # Cancelling → Cancelling: one request, at the first.
    server.add("repeated", [("RUNNING", 3000, None, None), ("CANCELLING", 2500, None, None),
                            ("CANCELLING", 2100, None, None)])  # fmt: skip
    # Entered Cancelling before the window, then Cancelling → Cancelling in it.
    server.add("before", [("RUNNING", 9000, None, None), ("CANCELLING", 8000, None, None),
                          ("CANCELLING", 1000, None, None)])  # fmt: skip
    return server


def test_runs_in_cancelling_since_their_one_request_are_read_from_the_runs_not_their_events() -> None:
    """Event counts (one request) say which runs have one Cancelling event in the window; a run in
    Cancelling whose state has that event's time is the whole story: its events are not read. A
    run counted once whose only end event has its current state's time ended in that state: its
    events are not read either. The report is the one every event gives."""
    counted, server = stuck_and_ended(), stuck_and_ended()
    server.event_counts = False
    with_counts, everything = (
        report_from(counted, since=timedelta(hours=2)),
        report_from(server, since=timedelta(hours=2)),
    )
    # One count of the window's Cancelling events, one of the end events of the runs not settled.
    assert counted.requests.count(("POST", "events/count-by/resource")) == 2
    asked = {i for f in counted.event_filters for i in (f.get("resource") or {}).get("id") or []}
    assert not {i for i in asked if i.startswith("prefect.flow-run.s")}, "a settled run's events were read"
    assert {"prefect.flow-run.again", "prefect.flow-run.repeated"} <= asked
    # A run counted once that ended ("e…") has no event read: its count says when it was asked, and
    # the count of its end events with its record says how that ended (in the state it is in).
    cancelling = "prefect.flow-run.Cancelling"
    asked_cancelling = {
        i
        for f in counted.event_filters
        if cancelling in ((f.get("event") or {}).get("prefix") or [])
        for i in (f.get("resource") or {}).get("id") or []
    }
    assert asked_cancelling == {"prefect.flow-run.again", "prefect.flow-run.repeated"}
    assert not {i for i in asked if i.startswith("prefect.flow-run.e")}, "an ended run's events were read"
    assert len(counted.requests) < len(server.requests)
    a, b = with_counts.to_dict(all_runs=True), everything.to_dict(all_runs=True)
    assert a.pop("source")["cancelling_events"] == b.pop("source")["cancelling_events"] == 155
    assert a == b
    f = with_counts.fleet
    assert (f.requested, f.cancelled, f.cancelling) == (154, 31, 123)
    assert {s.flow_run.id for s in with_counts.stuck} == {f"s{i:03d}" for i in range(120)} | {
        "again",
        "repeated",
        "before",
    }


def test_a_listing_refused_ends_the_report_with_its_error_and_stops_the_history() -> None:
    """The window's events are counted while the runs in Cancelling are listed (`build`): when the
    listing fails, the report fails with the listing's error, and the history read beside it stops
    at once instead of going on alone."""
    server = stuck_and_ended()
    handle = server.handle

    def refuse_listing(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if request.url.path.endswith("/flow_runs/filter") and "state" in (body.get("flow_runs") or {}):
            return httpx.Response(500, text="database is down")
        return handle(request)

    server.handle = refuse_listing  # type: ignore[method-assign]
    with pytest.raises(ApiRefused, match="500"):
        report_from(server, since=timedelta(hours=2))
    # The history asked for the count at most (it may not have begun when the listing failed), then
    # nothing: it waited for the listing, which failed.
    events = [p for _, p in server.requests if p.startswith("events/")]
    assert events in ([], ["events/count-by/resource"])


def test_ends_told_by_the_runs_as_they_are_match_the_events() -> None:
    """Runs asked once whose cancel ended in the state they are in now are read from their records and
    one count of their end events: timed out (the server's message), cancelled, ignored (completed,
    also after going back to Running), a final state of another name (its event is not an end event:
    its history is read), a restart ended twice. The report is the one every event gives."""

    def fleet() -> FakeServer:
        server = FakeServer()
        server.add("timed-out", [("RUNNING", 3000, None, None), ("CANCELLING", 2000, None, None),
                                 ("CANCELLED", 1000, TIMEOUT, None)])  # fmt: skip
        server.add("cancelled", [("RUNNING", 3000, None, None), ("CANCELLING", 2010, None, None),
                                 ("CANCELLED", 1990, None, None)])  # fmt: skip
        server.add("completed", [("RUNNING", 3000, None, None), ("CANCELLING", 2020, None, None),
                                 ("COMPLETED", 1500, None, None)])  # fmt: skip
        server.add("back", [("RUNNING", 3000, None, None), ("CANCELLING", 2030, None, None),
                            ("RUNNING", 1900, None, None), ("COMPLETED", 1500, None, None)])  # fmt: skip
        server.add("renamed", [("RUNNING", 3000, None, None), ("CANCELLING", 2040, None, None),
                               ("FAILED", 1500, "boom", "Exploded")])  # fmt: skip
        server.add("twice", [("RUNNING", 3000, None, None), ("CANCELLING", 2500, None, None),
                             ("CANCELLED", 2400, None, None), ("RUNNING", 2300, None, None),
                             ("COMPLETED", 1000, None, None)])  # fmt: skip
        return server

    counted, everything = fleet(), fleet()
    everything.event_counts = False
    a = report_from(counted, since=timedelta(hours=2)).to_dict(all_runs=True)
    b = report_from(everything, since=timedelta(hours=2)).to_dict(all_runs=True)
    a.pop("source"), b.pop("source")
    assert a == b
    report = report_from(fleet(), since=timedelta(hours=2))
    assert {c.flow_run_id: c.outcome for c in report.suspected_orphans} == {"timed-out": Outcome.TIMED_OUT}
    assert {c.flow_run_id for c in report.ignored_cancels} == {"completed", "back", "renamed"}
    asked = {i for f in counted.event_filters for i in (f.get("resource") or {}).get("id") or []}
    # Only the renamed end (no end event to count) and the run ended twice had events read.
    assert asked == {"prefect.flow-run.renamed", "prefect.flow-run.twice"}
