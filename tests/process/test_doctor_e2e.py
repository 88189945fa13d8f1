"""The doctor end to end: the CLI, as a subprocess, against real runs stuck for real.

GIVEN a real local Prefect server whose runs are stuck in real blocking calls
(the `stuck_runs` session fixture), WHEN `prefect-cancel-doctor scan --format
json` runs against it, THEN each run's verdict names the cause it was staged
for, the kind of blocking call and the exact file:line.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment, StuckRun

from prefect_cancel_doctor.demo.catalog import SCENARIOS, Recipe
from prefect_cancel_doctor.render.terminal import SHOWN
from tests.helpers import assert_calibrated, clean_environ, run_cli, staged_scenarios

pytestmark = pytest.mark.server

#: Scenarios whose flow swallows the cancel in an `except`, and how that clause begins.
EXCEPT_CLAUSES = {"except_loop": "except BaseException as exc:", "bare_except": "except:"}


def doctor(*args: str, api_url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return run_cli(*args, env=clean_environ(**env))


@pytest.fixture(scope="module")
def scan_result(demo_environment: DemoEnvironment) -> tuple[int, dict[str, Any]]:
    result = doctor("scan", "--format", "json", "--samples", "3", api_url=demo_environment.api_url)
    assert result.stdout.startswith("{"), result.stderr
    return result.returncode, json.loads(result.stdout)


def by_run(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["flow_run"]["id"]: entry for entry in document["runs"] if entry["flow_run"]}


def test_scan_exits_1_when_runs_are_stuck(scan_result: tuple[int, dict[str, Any]]) -> None:
    code, document = scan_result
    assert code == 1
    assert document["schema_version"] == 1
    assert document["runs"]


@pytest.mark.parametrize("scenario", staged_scenarios())
def test_scan_names_cause_kind_and_line(
    scenario: str, stuck_runs: dict[str, StuckRun], scan_result: tuple[int, dict[str, Any]]
) -> None:
    run = stuck_runs[scenario]
    entry = by_run(scan_result[1]).get(run.run_id)
    assert entry is not None, f"{scenario}: run {run.run_id} missing from the scan"
    verdict = entry["verdict"]
    assert verdict["cause"] == run.expected_cause.value, verdict["summary"]
    assert entry["flow_run"]["state_type"] == run.expected_state
    call = verdict["blocking_call"]
    if run.expected_kind is None:
        assert call is None or run.expected_location is None
    else:
        assert call is not None, verdict["summary"]
        assert call["kind"] == run.expected_kind.value
    if run.expected_location is not None:
        filename, line = run.expected_location
        assert (call["filename"], call["line"]) == (filename, line), verdict["summary"]
        assert call["stable"] is True
    assert verdict["summary"] and verdict["evidence"] and verdict["remediation"]
    also = [finding["cause"] for finding in verdict["also"]]
    assert also == ([run.expected_also.value] if run.expected_also else []), verdict["summary"]
    if run.expected_resource is not None:
        assert call["resource"]["kind"] == run.expected_resource.value, verdict["summary"]
        assert call["resource"]["description"] in verdict["summary"]
    staged = SCENARIOS[scenario]
    if run.expected_delivery is not None:
        assert verdict["delivery"]["sigterm"] == run.expected_delivery.value, verdict["delivery"]
    if staged.expected_absorbed is not None:
        assert verdict["delivery"]["absorbed_by"] == staged.expected_absorbed.value, verdict["delivery"]
        # A SIGTERM shown to have come and been absorbed is a confident verdict, with its signs listed.
        assert verdict["confidence"] >= 0.9 and verdict["delivery"]["signs_for"], verdict["delivery"]
    if scenario in EXCEPT_CLAUSES:
        # The `except` that swallows the cancel is named with its line, and the fix is at that line.
        source = staged.path.read_text().splitlines()
        line = next(
            n for n, text in enumerate(source, 1) if text.strip().startswith(EXCEPT_CLAUSES[scenario])
        )
        assert "the `except` at " in verdict["summary"], verdict["summary"]
        assert f"{staged.file}:{line}" in verdict["summary"], verdict["summary"]
        assert any("catch Exception, not" in fix for fix in verdict["remediation"]), verdict["remediation"]
    if staged.recipe is Recipe.WORKER_KILLED_AFTER_SIGTERM:
        # The worker died after the cancel (it sent SIGTERM first): no line may say it stopped before.
        assert not any("stopped before the cancel" in line for line in verdict["evidence"]), verdict[
            "evidence"
        ]


def test_the_blocking_line_is_shown_with_its_source(
    stuck_runs: dict[str, StuckRun], scan_result: tuple[int, dict[str, Any]]
) -> None:
    call = by_run(scan_result[1])[stuck_runs["database"].run_id]["verdict"]["blocking_call"]
    assert "# demo: blocks here" in call["code"]
    assert call["function"] == "sqlite3.Cursor.execute"


def test_flow_run_fields_come_from_the_api(
    stuck_runs: dict[str, StuckRun], scan_result: tuple[int, dict[str, Any]]
) -> None:
    run = stuck_runs["sleep"]
    flow_run = by_run(scan_result[1])[run.run_id]["flow_run"]
    assert flow_run["name"] == run.run_name
    assert flow_run["work_pool_name"] == run.pool_name
    assert flow_run["flow_name"] == "stuck-sleep"
    assert flow_run["infrastructure_pid"] == str(run.flow_pid)
    assert flow_run["cancelling_for_seconds"] > 0
    assert any(w["name"] == run.worker_name for w in flow_run["workers"])


def test_no_process_is_left_stopped_by_sampling(stuck_runs: dict[str, StuckRun]) -> None:
    from prefect_cancel_doctor.proc import procfs

    checked = 0
    for run in stuck_runs.values():
        if run.flow_pid and run.process_alive:
            snap = procfs.read_process(run.flow_pid)
            assert snap is not None and snap.state not in ("T", "t"), run.scenario
            checked += 1
    assert checked, "no live flow process was staged: nothing was checked"


def test_diagnose_one_run_reads_its_state_history(demo_environment: DemoEnvironment) -> None:
    run = demo_environment.run("database")
    result = doctor("diagnose", run.run_id, "--format", "json", "--samples", "2", api_url=run.api_url)
    assert result.returncode == 1, result.stderr
    (entry,) = json.loads(result.stdout)["runs"]
    assert entry["verdict"]["cause"] == "signal_pending"
    assert entry["flow_run"]["cancelling_since"] is not None


def test_inspect_a_pid_without_the_api(stuck_runs: dict[str, StuckRun]) -> None:
    run = stuck_runs["ignored"]
    assert run.flow_pid is not None
    result = doctor("inspect", "--pid", str(run.flow_pid), "--format", "json", "--samples", "2")
    assert result.returncode == 1, result.stderr
    (entry,) = json.loads(result.stdout)["runs"]
    assert entry["flow_run"] is None
    assert entry["verdict"]["cause"] == "signal_ignored"
    assert entry["verdict"]["blocking_call"]["line"] == run.line


def test_terminal_report_names_every_run_or_tallies_it_and_stays_off_stdout_for_progress(
    demo_environment: DemoEnvironment,
) -> None:
    result = doctor("scan", "--samples", "1", api_url=demo_environment.api_url, COLUMNS="160", NO_COLOR="1")
    assert result.returncode == 1
    # Every run up to the terminal's limit by name; the rest tallied, never silently dropped.
    named = [run for run in demo_environment.runs if run.run_name in result.stdout]
    assert len(named) == min(len(demo_environment.runs), SHOWN)
    if len(demo_environment.runs) > SHOWN:
        assert f"… and {len(demo_environment.runs) - SHOWN} more run(s)" in result.stdout
    assert "\x1b[" not in result.stdout


def test_an_empty_server_exits_0_and_auth_failures_exit_3() -> None:
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    with LocalPrefect(server_env={"PREFECT_SERVER_API_AUTH_STRING": "admin:s3cret"}) as server:
        refused = doctor("scan", api_url=server.api_url)
        assert refused.returncode == 3
        assert "refused" in refused.stderr and "s3cret" not in refused.stderr
        empty = doctor("scan", api_url=server.api_url, PREFECT_API_AUTH_STRING="admin:s3cret")
        assert empty.returncode == 0, empty.stderr
        assert "No flow runs stuck" in empty.stdout


def test_confidence_is_calibrated_on_the_staged_runs(
    stuck_runs: dict[str, StuckRun], scan_result: tuple[int, dict[str, Any]]
) -> None:
    """Each band's verdicts are right at least as often as the band claims (README: Confidence)."""
    entries = by_run(scan_result[1])
    verdicts = [entries[run.run_id]["verdict"] for run in stuck_runs.values()]
    assert_calibrated(
        [
            (verdict["confidence"], verdict["cause"] == run.expected_cause.value)
            for verdict, run in zip(verdicts, stuck_runs.values(), strict=True)
        ],
        "processes",
    )
