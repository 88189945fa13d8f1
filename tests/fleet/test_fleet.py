"""fleet.py without a server: a host's published events read back, and used where this host cannot see.

The real thing, with hosts in their own namespaces: tests/fleet/test_fleet_of_hosts.py.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect_cancel_doctor.clients.prefect_records import Event, parse_event
from prefect_cancel_doctor.fleet.protocol import (
    AgentSeen,
    Fleet,
    FleetVerdict,
    UncoveredPool,
    parse_host_event,
    parse_verdict_event,
    report_uncovered,
    should_use,
    uncovered,
    with_fleet,
)
from prefect_cancel_doctor.fleet.publish import Related, Seen, host_event, verdict_event
from prefect_cancel_doctor.model import CallKind, Cause, Diagnosis, StateType, Verdict
from tests.render.test_render import report_of, sleeping

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
PUBLISHED = NOW - timedelta(minutes=3)


def _read_back(event: dict[str, Any]) -> Event:
    """An event as the events API returns what was posted (plus the server's fields)."""
    return parse_event({**event, "received": NOW.isoformat()})


def test_a_published_verdict_reads_back_as_it_was_diagnosed() -> None:
    d = sleeping()
    sent = verdict_event(d, "node-7", Seen("node-7", ("pool",)), Related("f", "d", "p"), now=PUBLISHED)
    found = parse_verdict_event(_read_back(sent), NOW)
    assert found is not None and d.flow_run is not None
    assert found.run_id == d.flow_run.id
    assert found.published.host == "node-7" and found.published.found_there is True
    assert found.published.age_seconds == 180.0
    verdict = found.verdict
    assert (verdict.cause, verdict.summary, verdict.confidence) == (
        d.verdict.cause,
        d.verdict.summary,
        d.verdict.confidence,
    )
    call, original = verdict.blocking_call, d.verdict.blocking_call
    assert call is not None and original is not None
    assert (call.kind, call.function, call.filename, call.line) == (
        CallKind.SLEEP,
        original.function,
        original.filename,
        original.line,
    )
    # That host's commands name its PIDs: never offered here, but said where they belong.
    assert d.verdict.stop_now and verdict.stop_now == ()
    assert verdict.remediation[0].startswith(
        "end it now, on host node-7 (not here): `prefect-cancel-doctor resolve "
    )
    assert verdict.remediation[1].startswith("or by hand, on host node-7 (not here): `kill -TERM")


def test_an_event_that_is_not_ours_or_is_broken_is_no_verdict() -> None:
    raw = {"id": "e1", "event": "prefect-cancel-doctor.verdict", "occurred": NOW.isoformat(), "resource": {}}
    assert parse_verdict_event(parse_event(raw), NOW) is None  # no run
    odd = verdict_event(sleeping(), "h", Seen("h"), Related(), now=PUBLISHED)
    odd["payload"] = {"cause": "a-cause-from-the-future", "confidence": "high", "blocking_call": [1]}
    found = parse_verdict_event(_read_back(odd), NOW)
    assert found is not None and found.verdict.cause is Cause.UNKNOWN
    assert found.verdict.confidence == 0.0 and found.verdict.blocking_call is None


def test_a_hosts_event_reads_back_as_what_it_saw() -> None:
    sent = host_event(Seen("node-7", ("etl",), ("etl-1",)), 2, {}, now=PUBLISHED)
    seen = parse_host_event(_read_back(sent), NOW)
    assert seen == AgentSeen("node-7", PUBLISHED.isoformat(), 180.0, ("etl",), ("etl-1",))


def _elsewhere() -> tuple[Diagnosis, FleetVerdict | None]:
    here = sleeping()
    assert here.target is not None
    not_here = dataclasses.replace(
        here,
        target=dataclasses.replace(here.target, processes=()),
        verdict=Verdict(Cause.NOT_ATTACHABLE, "not on this host", 0.6),
    )
    sent = verdict_event(here, "node-7", Seen("node-7"), Related(), now=PUBLISHED)
    return not_here, parse_verdict_event(_read_back(sent), NOW)


def test_another_hosts_verdict_replaces_what_this_host_could_not_see() -> None:
    not_here, found = _elsewhere()
    assert found is not None and not_here.flow_run is not None
    merged = with_fleet(report_of(not_here), Fleet({not_here.flow_run.id: found}), "central")
    (d,) = merged.runs
    assert d.verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert d.published is not None and d.published.host == "node-7"
    assert d.target is not None and d.target.host == "node-7"
    assert d.target.description == "test on host node-7 (its verdict, published 3m00s ago)"


def test_a_run_found_here_or_a_verdict_of_our_own_is_never_replaced() -> None:
    not_here, found = _elsewhere()
    assert found is not None
    here = sleeping()
    assert not should_use(here, found, "central")
    assert not should_use(not_here, found, "node-7")
    assert should_use(not_here, found, "central")


def test_a_run_this_host_just_published_a_verdict_for_is_answered_for() -> None:
    # `scan --publish` on node-7: the run is not found here, but this host answers for it (a worker of
    # its pool runs here), published its verdict, and reads it back; it is not "uncovered".
    not_here, mine = _elsewhere()
    assert mine is not None and not_here.flow_run is not None
    agents = (AgentSeen("node-7", "t", 1.0, (not_here.flow_run.work_pool_name or "",), ()),)
    cancelling = dataclasses.replace(
        not_here, flow_run=dataclasses.replace(not_here.flow_run, state_type=StateType.CANCELLING)
    )
    report = with_fleet(report_of(cancelling), Fleet({not_here.flow_run.id: mine}, agents), "node-7")
    assert report_uncovered(report, Fleet({not_here.flow_run.id: mine}, agents)) == ()
    assert report_uncovered(report, Fleet({}, agents)) != ()


def test_runs_no_host_answered_for_are_listed_per_pool_with_the_agents_seeing_it() -> None:
    fleet = Fleet({}, (AgentSeen("node-7", "t", 1.0, ("etl",), ()),))
    pools = uncovered([("a", "etl", False), ("b", "ml", False), ("c", "ml", True), ("d", None, False)], fleet)
    assert pools == (
        UncoveredPool("(no work pool)", ("d",), ()),
        UncoveredPool("etl", ("a",), ("node-7",)),
        UncoveredPool("ml", ("b",), ()),
    )
    assert pools[2].text == "work pool ml: no agent covers it (b)"
    assert pools[1].text.startswith(
        "work pool etl: the agents on node-7 see it but published no verdict for a"
    )
