"""The statistics, outcomes and rules on small hand-made histories (no server)."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone

import pytest

from prefect_cancel_doctor.clients.prefect_records import parse_event
from prefect_cancel_doctor.core.durations import parse_duration
from prefect_cancel_doctor.health.history import (
    StateEvent,
    cancel_requests,
    end_of,
    outcome_of,
    state_event,
)
from prefect_cancel_doctor.health.model import Cancellation, Outcome
from prefect_cancel_doctor.health.rules import RuleName, parse_rule, parse_rules
from prefect_cancel_doctor.health.statistics import (
    distribution,
    group_stats,
    grouped,
    histogram,
    percentile,
    worst_offenders,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(
    run: str, seconds: float, state: str, message: str | None = None, previous: str | None = None
) -> StateEvent:
    return StateEvent(run, at(seconds), state, state.title(), message, previous)


def cancel(
    outcome: Outcome,
    seconds: float | None,
    deployment: str = "etl/prod",
    pool: str = "p",
    worker: str | None = "w",
) -> Cancellation:
    return Cancellation("id", "name", deployment, pool, worker, T0.isoformat(), outcome, seconds=seconds)


# -- percentiles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [3.0, 1.0, 2.0],
        [0.5] * 7 + [300.0],
        [float(i) for i in range(1, 101)],
        [0.1, 0.2, 0.3, 0.4, 10.0, 12.5],
    ],
)
def test_percentiles_match_statistics_quantiles_inclusive(values: list[float]) -> None:
    reference = statistics.quantiles(values, n=100, method="inclusive")
    assert percentile(values, 95) == pytest.approx(reference[94])
    assert percentile(values, 50) == pytest.approx(statistics.median(values))


def test_percentile_edge_cases() -> None:
    assert percentile([], 95) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0


def test_distribution_of_nothing() -> None:
    d = distribution([])
    assert (d.count, d.p50, d.p95, d.max) == (0, None, None, None)


# -- outcomes from events ----------------------------------------------------------------------


def test_a_cancelling_to_cancelling_transition_is_one_request() -> None:
    events = [
        ev("a", 10, "CANCELLING", previous="RUNNING"),
        ev("a", 12, "CANCELLING", previous="CANCELLING"),
        ev("b", 11, "CANCELLING", previous="RUNNING"),
    ]
    requests = cancel_requests(events)
    assert [e.occurred for e in requests["a"]] == [at(10)]
    assert list(requests) == ["a", "b"]


def test_a_run_cancelled_twice_has_two_requests_each_with_its_own_end() -> None:
    first, second = (
        ev("a", 10, "CANCELLING", previous="RUNNING"),
        ev("a", 100, "CANCELLING", previous="RUNNING"),
    )
    ends = [ev("a", 40, "RUNNING"), ev("a", 130, "CANCELLED")]
    assert end_of(first, ends, second.occurred) == ends[0]
    assert end_of(second, ends, None) == ends[1]
    assert outcome_of(ends[0]) is Outcome.OTHER


def test_an_end_after_the_next_request_does_not_end_the_first() -> None:
    first, second = ev("a", 10, "CANCELLING"), ev("a", 20, "CANCELLING")
    assert end_of(first, [ev("a", 30, "CANCELLED")], second.occurred) is None


@pytest.mark.parametrize(
    ("state", "message", "expected"),
    [
        ("CANCELLED", None, Outcome.CANCELLED),
        (
            "CANCELLED",
            "Flow run cancellation timed out; marked this flow run as Cancelled.",
            Outcome.TIMED_OUT,
        ),
        ("COMPLETED", None, Outcome.IGNORED),
        ("FAILED", "boom", Outcome.IGNORED),
        ("CRASHED", None, Outcome.IGNORED),
        ("SCHEDULED", None, Outcome.OTHER),
    ],
)
def test_outcome_of_the_ending_state(state: str, message: str | None, expected: Outcome) -> None:
    assert outcome_of(ev("a", 1, state, message)) is expected


def test_state_event_reads_what_the_server_emits() -> None:
    # As `POST /events/filter` returned it from a Prefect 3.9 server (trimmed).
    timed_out = "Flow run cancellation timed out; marked this flow run as Cancelled."

    def related(role: str, name: str | None = None) -> dict[str, str]:
        resource = {"prefect.resource.id": f"prefect.{role}.1", "prefect.resource.role": role}
        return {**resource, "prefect.resource.name": name} if name else resource

    raw = {
        "occurred": "2026-11-27T18:05:09.256881Z",
        "event": "prefect.flow-run.Cancelled",
        "resource": {
            "prefect.resource.id": "prefect.flow-run.3024794b-960c-41b3-9383-20cd6267b0af",
            "prefect.resource.name": "nano-badger",
            "prefect.state-message": timed_out,
            "prefect.state-name": "Cancelled",
            "prefect.state-type": "CANCELLED",
        },
        "related": [related("flow", "etl"), related("deployment", "d1"), related("tag")],
        "payload": {
            "initial_state": {"type": "CANCELLING", "name": "Cancelling"},
            "validated_state": {"type": "CANCELLED", "name": "Cancelled", "message": timed_out},
        },
        "id": "01a21e2e-92e8-7b69-8992-fab4d3a0c9aa",
    }
    event = state_event(parse_event(raw))
    assert event is not None
    assert event.run_id == "3024794b-960c-41b3-9383-20cd6267b0af"
    assert event.from_type == "CANCELLING" and outcome_of(event) is Outcome.TIMED_OUT
    assert dict(event.related) == {"flow": "etl", "deployment": "d1"}
    assert (
        state_event(parse_event({"id": "e", "resource": {"prefect.resource.id": "prefect.deployment.x"}}))
        is None
    )


# -- grouping ---------------------------------------------------------------------------------


def test_group_stats_counts_outcomes_and_resistance() -> None:
    cancels = [
        cancel(Outcome.CANCELLED, 0.5),
        cancel(Outcome.CANCELLED, 90.0),  # slow
        cancel(Outcome.TIMED_OUT, 310.0),
        cancel(Outcome.IGNORED, 20.0),
        cancel(Outcome.CANCELLING, 1000.0),
        cancel(Outcome.OTHER, None),
    ]
    g = group_stats("etl/prod", cancels, slow_seconds=60)
    assert (g.requested, g.cancelled, g.timed_out, g.ignored, g.cancelling, g.other, g.slow) == (
        6,
        2,
        1,
        1,
        1,
        1,
        1,
    )
    assert g.resisted == 4 and g.resistance == pytest.approx(4 / 6)
    # Time to cancel covers the cancels that reached a final state, not the pending one.
    assert g.time_to_cancel.count == 4
    assert g.time_to_cancel.max == 310.0
    assert g.time_to_cancel.p50 == pytest.approx(statistics.median([0.5, 90.0, 310.0, 20.0]))


def test_grouped_names_missing_keys_and_orders_by_volume() -> None:
    cancels = [
        cancel(Outcome.CANCELLED, 1, worker=None),
        cancel(Outcome.CANCELLED, 1, worker="a"),
        cancel(Outcome.CANCELLED, 1, worker="a"),
    ]
    groups = grouped(cancels, lambda c: c.worker, "(unknown worker)", 60)
    assert [(g.name, g.requested) for g in groups] == [("a", 2), ("(unknown worker)", 1)]


def test_histogram_buckets_are_half_open() -> None:
    buckets = histogram([0.0, 0.999, 1.0, 300.0, 299.9, 7200.0])
    counts = {b.label: b.count for b in buckets}
    assert counts["<1s"] == 2 and counts["1s–5s"] == 1 and counts["2m–5m"] == 1 and counts["5m–10m"] == 1
    assert counts["≥1h"] == 1 and buckets[-1].upper is None
    assert sum(counts.values()) == 6


def test_worst_offenders_rank_by_resisted_then_share() -> None:
    a = group_stats("a", [cancel(Outcome.TIMED_OUT, 300)] * 2 + [cancel(Outcome.CANCELLED, 1)] * 8, 60)
    b = group_stats("b", [cancel(Outcome.IGNORED, 3)] * 2, 60)
    c = group_stats("c", [cancel(Outcome.CANCELLED, 1)] * 50, 60)
    assert [g.name for g in worst_offenders([a, b, c], 10)] == ["b", "a"]


# -- rules --------------------------------------------------------------------------------------


def test_rules_parse() -> None:
    assert parse_rule("stuck-older-than=15m").threshold == 900
    assert parse_rule(" P95-ABOVE=2m ").name is RuleName.P95_ABOVE
    assert [r.text for r in parse_rules(["orphans,ignored", "max-above=1h slots"])] == [
        "orphans",
        "ignored",
        "max-above=1h",
        "slots",
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("p99-above=1s", "unknown rule"),
        ("stuck-older-than", "needs a duration"),
        ("orphans=3", "takes no value"),
        ("p95-above=soon", "not a duration"),
    ],
)
def test_bad_rules_say_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_rule(text)


def test_durations() -> None:
    assert parse_duration("90").total_seconds() == 90
    assert parse_duration("1.5s").total_seconds() == 1.5
    assert parse_duration("2d").total_seconds() == 172800
