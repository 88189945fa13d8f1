"""`report` and `schedule` as a user runs them, without a server: help, usage errors, exit codes."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import closed_port, run_cli


def test_report_help_lists_formats_rules_and_exit_codes(clean_env: dict[str, str]) -> None:
    result = run_cli("report", "--help", env={**clean_env, "COLUMNS": "200"})
    assert result.returncode == 0
    words = ("--since", "markdown", "html", "--output-file", "--fail-on", "stuck-older-than", "PCD_FAIL_ON")
    for word in words:
        assert word in result.stdout, word
    assert "1 a rule is breached" in result.stdout


def test_bad_durations_and_rules_are_usage_errors(clean_env: dict[str, str]) -> None:
    for args, what in (
        (("--since", "yesterday"), "--since"),
        (("--slow", "slowly"), "--slow"),
        (("--fail-on", "p99-above=1s"), "unknown rule"),
        (("--fail-on", "stuck-older-than"), "needs a duration"),
    ):
        result = run_cli("report", *args, env=clean_env)
        assert result.returncode == 2, (args, result.stderr)
        assert what in result.stderr and "Traceback" not in result.stderr


def test_no_api_exits_2_and_unreachable_api_exits_3(clean_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli("report", "--no-sample", env=clean_env)
    assert result.returncode == 2 and result.stderr.startswith("error: no Prefect API configured")
    out = tmp_path / "report.md"
    env = {**clean_env, "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}
    result = run_cli("report", "--no-sample", "-o", "markdown", "--output-file", str(out), env=env)
    assert result.returncode == 3 and result.stderr.startswith("error: cannot reach the Prefect API")
    assert not out.exists(), "--output-file is opened only once the report succeeded"


def test_rules_come_from_the_environment(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "PCD_FAIL_ON": "orphans p42-above=1s"}
    result = run_cli("report", env=env)
    assert result.returncode == 2 and "unknown rule 'p42-above'" in result.stderr


def test_schedule_refuses_a_bad_cron_before_serving(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}
    result = run_cli("schedule", "--cron", "every now and then", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid schedule 'every now and then'")
