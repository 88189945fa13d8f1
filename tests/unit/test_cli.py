"""The CLI as a user runs it: exit codes, clean errors, JSON-only stdout, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import closed_port, run_cli


def test_cli_import_path_loads_no_prefect_and_no_heavy_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import prefect_cancel_doctor.cli"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in out.splitlines() if "|" in line}
    heavy = {m for m in modules if m.split(".")[0] in ("prefect", "httpx", "pydantic", "anyio")}
    assert "prefect_cancel_doctor.cli" in modules
    assert heavy == set()


def test_help_documents_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout and "3 Prefect API unreachable" in result.stdout


def test_missing_configuration_exits_2_without_traceback(clean_env: dict[str, str]) -> None:
    result = run_cli("scan", env=clean_env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no Prefect API configured")
    assert "hint:" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_api_exits_3(clean_env: dict[str, str]) -> None:
    result = run_cli("scan", "--api-url", f"http://127.0.0.1:{closed_port()}/api", env=clean_env)
    assert result.returncode == 3, result.stderr
    assert "cannot reach the Prefect API" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_arguments_exit_2(clean_env: dict[str, str]) -> None:
    assert run_cli("diagnose", "not-a-run-id", env=clean_env).returncode == 2
    assert run_cli("scan", "--since", "banana", env=clean_env).returncode == 2
    gone = run_cli("inspect", "--pid", "4194303", env=clean_env)
    assert gone.returncode == 2
    assert "no process with PID 4194303" in gone.stderr


def test_inspect_json_stdout_is_only_json(tmp_path: Path, clean_env: dict[str, str]) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text("import sys, time\nprint('ready', flush=True)\ntime.sleep(600)  # here\n")
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        result = run_cli(
            "inspect", "--pid", str(child.pid), "--format", "json", "--samples", "2", env=clean_env
        )
        assert result.returncode == 1, result.stderr
        document = json.loads(result.stdout)
        verdict = document["runs"][0]["verdict"]
        assert verdict["blocking_call"]["kind"] == "sleep"
        assert verdict["blocking_call"]["filename"] == str(script)
        assert verdict["blocking_call"]["line"] == 3
        assert document["schema_version"] == 1
    finally:
        child.kill()
        child.wait()
