"""`report` against a real Prefect server seeded with a realistic history (the `fleet` fixture).

GIVEN ~2,800 runs, ~530 of them cancelled (quickly, slowly, timed out by the
server itself, ignored), runs stuck now on this host and on hosts out of
reach, a held concurrency slot and a cancelled parent with live children,
WHEN `prefect-cancel-doctor report` reads the server, THEN every statistic
equals the one computed from the server's state table, each finding names
exactly the seeded runs, and the cost follows the cancelled runs, not the
history.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from prefect_cancel_doctor.health.history import TIMEOUT_MESSAGE_PREFIX
from prefect_cancel_doctor.health.statistics import HISTOGRAM_EDGES
from tests.health.history import SeededFleet, Truth

pytestmark = pytest.mark.server

SLOW = 1.5  # REPORT_ARGS' --slow


def quantile(values: list[float], q: int) -> float | None:
    """The reference: statistics.quantiles' inclusive method (numpy's linear interpolation)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if q == 50:
        return statistics.median(values)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def outcome(t: Truth) -> str:
    if t.end_type is None:
        return "cancelling"
    if t.end_type == "CANCELLED":
        return "timed_out" if (t.end_message or "").startswith(TIMEOUT_MESSAGE_PREFIX) else "cancelled"
    return "ignored" if t.end_type in ("COMPLETED", "FAILED", "CRASHED") else "other"


def expected_groups(
    truths: Iterable[Truth], key: Callable[[Truth], str | None], none: str
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Truth]] = defaultdict(list)
    for t in truths:
        groups[key(t) or none].append(t)
    out = {}
    for name, items in groups.items():
        ended = [t.seconds for t in items if t.seconds is not None and outcome(t) != "other"]
        kinds = [outcome(t) for t in items]
        slow = sum(1 for t in items if outcome(t) == "cancelled" and (t.seconds or 0) > SLOW)
        out[name] = {
            "requested": len(items),
            "cancelled": kinds.count("cancelled"),
            "timed_out": kinds.count("timed_out"),
            "ignored": kinds.count("ignored"),
            "cancelling": kinds.count("cancelling"),
            "slow": slow,
            "resisted": kinds.count("timed_out") + kinds.count("ignored") + kinds.count("cancelling") + slow,
            "count": len(ended),
            "p50": quantile(ended, 50),
            "p95": quantile(ended, 95),
            "max": max(ended, default=None),
        }
    return out


def close(actual: float | None, expected: float | None) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return math.isclose(actual, expected, abs_tol=1e-5)


def check_groups(reported: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    assert {g["name"] for g in reported} == set(expected)
    for group in reported:
        want = expected[group["name"]]
        ttc = group["time_to_cancel"]
        got = {
            k: group[k]
            for k in ("requested", "cancelled", "timed_out", "ignored", "cancelling", "slow", "resisted")
        }
        assert got == {k: want[k] for k in got}, group["name"]
        assert ttc["count"] == want["count"], group["name"]
        for stat in ("p50", "p95", "max"):
            assert close(ttc[stat], want[stat]), (group["name"], stat, ttc[stat], want[stat])


# -- the statistics ------------------------------------------------------------------------


def test_the_seeded_history_is_realistic(fleet: SeededFleet) -> None:
    kinds = defaultdict(int)
    for t in fleet.truth.values():
        kinds[outcome(t)] += 1
    assert fleet.total_runs > 2500
    assert kinds["cancelled"] > 400 and kinds["timed_out"] >= 10 and kinds["ignored"] == 15
    assert kinds["cancelling"] >= 10
    # The server's own timeout ended them, with its message.
    assert all(
        t.end_message and t.end_message.startswith(TIMEOUT_MESSAGE_PREFIX)
        for t in fleet.truth.values()
        if t.intent == "timed_out"
    )


def test_fleet_statistics_equal_the_server_state_table(
    fleet: SeededFleet, report_document: dict[str, Any]
) -> None:
    expected = expected_groups(fleet.truth.values(), lambda t: "fleet", "fleet")
    check_groups([report_document["fleet"]], expected)


def test_per_deployment_statistics(fleet: SeededFleet, report_document: dict[str, Any]) -> None:
    check_groups(
        report_document["by_deployment"],
        expected_groups(fleet.truth.values(), lambda t: t.deployment, "(no deployment)"),
    )


def test_per_work_pool_statistics(fleet: SeededFleet, report_document: dict[str, Any]) -> None:
    check_groups(
        report_document["by_work_pool"],
        expected_groups(fleet.truth.values(), lambda t: t.pool, "(no work pool)"),
    )


def test_per_worker_statistics(fleet: SeededFleet, report_document: dict[str, Any]) -> None:
    check_groups(
        report_document["by_worker"],
        expected_groups(fleet.truth.values(), lambda t: t.worker, "(unknown worker)"),
    )


def test_histogram_counts_every_ended_cancel_once(
    fleet: SeededFleet, report_document: dict[str, Any]
) -> None:
    ended = [t.seconds for t in fleet.truth.values() if t.seconds is not None and outcome(t) != "other"]
    edges = (0.0, *HISTOGRAM_EDGES, math.inf)
    expected = [sum(1 for s in ended if lo <= s < hi) for lo, hi in itertools.pairwise(edges)]
    assert [b["count"] for b in report_document["histogram"]] == expected


def test_worst_offender_is_the_deployment_that_resists_most(
    fleet: SeededFleet, report_document: dict[str, Any]
) -> None:
    expected = expected_groups(fleet.truth.values(), lambda t: t.deployment, "(no deployment)")
    ranked = sorted(
        (g for g in expected.items() if g[1]["resisted"]),
        key=lambda kv: (-kv[1]["resisted"], -kv[1]["resisted"] / kv[1]["requested"], kv[0]),
    )
    assert [g["name"] for g in report_document["worst_offenders"]] == [name for name, _ in ranked][:20]
    # 'slow' is real time (more than 1.5 s): on a loaded machine the quick cancels of a big
    # deployment turn slow and it can lead. What does not depend on the machine's speed: the
    # deployment seeded to resist (timeouts, ignored cancels, runs left Cancelling) leads on those.
    hard = max(
        report_document["worst_offenders"], key=lambda g: g["timed_out"] + g["ignored"] + g["cancelling"]
    )
    assert hard["name"] == "train/gpu"


# -- the findings -------------------------------------------------------------------------


def test_suspected_orphans_are_exactly_the_runs_the_server_timed_out(
    fleet: SeededFleet, report_document: dict[str, Any]
) -> None:
    expected = {t.run_id for t in fleet.truth.values() if outcome(t) == "timed_out"}
    assert {c["flow_run_id"] for c in report_document["suspected_orphans"]} == expected
    sample = next(c for c in report_document["suspected_orphans"] if c["deployment"] == "train/gpu")
    assert sample["end_message"].startswith(TIMEOUT_MESSAGE_PREFIX)
    assert sample["infrastructure_pid"].startswith("etl-host-")


def test_ignored_cancels_are_the_runs_that_completed_or_failed_anyway(
    fleet: SeededFleet, report_document: dict[str, Any]
) -> None:
    expected = {t.run_id: t.end_type for t in fleet.truth.values() if outcome(t) == "ignored"}
    assert {c["flow_run_id"]: c["end_state_type"] for c in report_document["ignored_cancels"]} == expected
    assert set(expected.values()) == {"COMPLETED", "FAILED"}


def test_stuck_runs_are_sampled_here_and_located_elsewhere(
    fleet: SeededFleet, fleet_environment: tuple[SeededFleet, Any], report_document: dict[str, Any]
) -> None:
    stuck = {s["flow_run"]["id"]: s for s in report_document["stuck"]}
    assert set(stuck) == {t.run_id for t in fleet.truth.values() if outcome(t) == "cancelling"}
    # The demo run stuck for real on this host: sampled, with the doctor's verdict and line.
    demo = fleet_environment[1].run("sleep")
    entry = stuck[demo.run_id]
    assert entry["sampled"] is True
    assert entry["verdict"]["cause"] == demo.expected_cause.value
    call = entry["verdict"]["blocking_call"]
    assert (call["filename"], call["line"]) == demo.expected_location
    # How many samples each process gave, not their thread stacks (scan's and diagnose's to show):
    # with them, a sampled run weighed about 100 KB, fifty times a run located from the API.
    processes = entry["target"]["processes"]
    assert "threads" not in entry and all("threads" not in p for p in processes)
    assert any(p["samples"] >= 1 for p in processes)
    assert len(json.dumps(entry)) < 12_000, len(json.dumps(entry))
    # Runs on another host or in Kubernetes: located from infrastructure_pid, not sampled, and said so.
    for run_id, where in fleet.remote_stuck.items():
        entry = stuck[run_id]
        assert entry["sampled"] is False
        assert entry["verdict"]["cause"] == "not_attachable"
        assert entry["note"]
        if where == "gpu-node-7":
            assert "gpu-node-7" in entry["location"] + entry["note"]
        else:
            assert "Kubernetes" in entry["note"] or "kubernetes" in entry["note"].lower()
    causes = {c["value"]: c["count"] for c in report_document["top_causes"]}
    assert causes["cancel_not_observed"] >= 1 and causes["not_attachable"] >= len(fleet.remote_stuck)
    sites = report_document["top_call_sites"]
    assert any(s["line"] == demo.expected_location[1] and s["function"] == call["function"] for s in sites)


def test_an_orphan_process_found_here_is_reported(
    fleet_environment: tuple[SeededFleet, Any], report_document: dict[str, Any]
) -> None:
    orphan = fleet_environment[1].run("orphan")
    live = {s["flow_run"]["id"]: s for s in report_document["live_orphans"]}
    assert live[orphan.run_id]["verdict"]["cause"] == "orphaned_infrastructure"
    assert live[orphan.run_id]["flow_run"]["state_type"] == "CANCELLED"


def test_sub_deployment_runs_of_a_cancelled_parent(
    fleet: SeededFleet, report_document: dict[str, Any]
) -> None:
    children = report_document["orphaned_children"]
    assert {c["flow_run_id"] for c in children} == set(fleet.child_runs)
    assert {c["parent_id"] for c in children} == {fleet.parent_run}
    assert {c["parent_state_type"] for c in children} == {"CANCELLED"}
    assert {c["deployment"] for c in children} == {"export/s3"}


def test_a_stuck_run_holding_its_deployment_slot(fleet: SeededFleet, report_document: dict[str, Any]) -> None:
    (hold,) = [h for h in report_document["slots"] if h["scope"] == "deployment"]
    assert (hold["name"], hold["limit"], hold["active_slots"], hold["held"]) == ("limited", 1, 1, 1)
    assert len(hold["runs"]) == 1
    # Work pools have no limit here; nothing else is reported as held.
    assert [h["scope"] for h in report_document["slots"]] == ["deployment"]


def test_cost_follows_the_cancelled_runs_not_the_history(
    fleet: SeededFleet, report_document: dict[str, Any]
) -> None:
    source = report_document["source"]
    cancels = len(fleet.truth)
    assert source["method"] == "events"
    assert source["runs_read"] == cancels  # only the cancelled runs are read, never the whole history
    assert source["history_reads"] == 0
    assert cancels <= source["cancelling_events"] <= cancels + 5
    # Events pages of 50 (Cancelling, then ends by 50 runs), runs 200 a page, plus the stuck-now part.
    budget = 2 * math.ceil(cancels / 50) + math.ceil(cancels / 200) + 60
    assert source["requests"] <= budget, (source["requests"], budget)
    assert fleet.total_runs > 5 * cancels
    assert source["events_retention_seconds"] == 7 * 86400


# -- exit codes, one per rule -------------------------------------------------------------------


RULE_CASES = [
    # (rules, extra args, exit code)
    ("stuck", (), 1),
    ("stuck-older-than=1s", (), 1),
    ("stuck-older-than=1d", (), 0),
    ("p95-above=1s", (), 1),
    ("p95-above=1h", (), 0),
    ("max-above=1s", (), 1),
    ("max-above=1h", (), 0),
    ("orphans", (), 1),
    ("orphans", ("--since", "1s"), 0),
    ("ignored", (), 1),
    ("ignored", ("--since", "1s"), 0),
    ("children", (), 1),
    ("children", ("--since", "1s"), 0),
    ("slots", (), 1),
    ("stuck-older-than=1d,p95-above=1h", (), 0),
]


@pytest.mark.parametrize(
    ("rules", "extra", "code"), RULE_CASES, ids=[f"{r}{''.join(e)}->{c}" for r, e, c in RULE_CASES]
)
def test_fail_on_exit_codes(fleet: SeededFleet, rules: str, extra: tuple[str, ...], code: int) -> None:
    from typer.testing import CliRunner

    from prefect_cancel_doctor.cli import app

    args = ["report", "--since", "1h", "--no-sample", "--format", "json", "--fail-on", rules, *extra]
    result = CliRunner().invoke(app, args, env={"PREFECT_API_URL": fleet.api_url, "NO_COLOR": "1"})
    assert result.exit_code == code, result.output
    breaches = [line for line in result.stderr.splitlines() if line.startswith("breached: ")]
    if code:
        assert breaches and all(b.startswith(f"breached: {rules.split('=')[0]}") for b in breaches)
    else:
        assert not breaches


def test_a_bad_rule_is_a_usage_error(fleet: SeededFleet) -> None:
    from typer.testing import CliRunner

    from prefect_cancel_doctor.cli import app

    result = CliRunner().invoke(
        app, ["report", "--fail-on", "p99-above=1s"], env={"PREFECT_API_URL": fleet.api_url}
    )
    assert result.exit_code == 2
    assert "unknown rule" in result.stderr


def test_json_lists_the_longest_stuck_runs_and_counts_the_rest(fleet: SeededFleet) -> None:
    """The real fleet's report, bounded to 3 stuck runs: the 3 longest in Cancelling, the rest counted.

    Every statistic still counts every stuck run; `all_runs` lists them all (the CLI's default
    listing, 50, holds all of this fleet's).
    """
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.clients.settings import Connection
    from prefect_cancel_doctor.health.build import build_health_report
    from prefect_cancel_doctor.health.options import parse_health_options

    expected = {t.run_id: t for t in fleet.truth.values() if outcome(t) == "cancelling"}
    assert len(expected) > 3
    api = PrefectApi(Connection(fleet.api_url))
    try:
        report = build_health_report(api, parse_health_options(since="1h", slow="1.5s", sample=False))
    finally:
        api.close()
    bounded = json.loads(json.dumps(report.to_dict(listed=3)))
    whole = json.loads(json.dumps(report.to_dict(all_runs=True)))
    default = report.to_dict()
    assert {s["flow_run"]["id"] for s in whole["stuck"]} == set(expected)
    assert whole["omitted"] == {"stuck": 0, "live_orphans": 0} and whole["listed"] is None
    assert len(default["stuck"]) == len(expected) and default["omitted"]["stuck"] == 0
    assert default["listed"] == 50
    listed = [s["flow_run"]["id"] for s in bounded["stuck"]]
    assert bounded["omitted"]["stuck"] == len(expected) - 3 and bounded["listed"] == 3
    # The longest in Cancelling, by when each entered it (the server's state table).
    longest = sorted(expected.values(), key=lambda t: t.requested_at)[:3]
    assert set(listed) == {t.run_id for t in longest}
    assert bounded["fleet"] == whole["fleet"] and bounded["top_causes"] == whole["top_causes"]
