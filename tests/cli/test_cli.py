"""The CLI as a user runs it: exit codes, clean errors, JSON-only stdout, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CLI, closed_port, run_cli


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
    assert run_cli("diagnose", " ", env=clean_env).returncode == 2
    assert run_cli("scan", "--since", "banana", env=clean_env).returncode == 2
    gone = run_cli("inspect", "--pid", "4194303", env=clean_env)
    assert gone.returncode == 2
    assert "no process with PID 4194303" in gone.stderr
    both = run_cli("demo", "--docker", "--kubernetes", env=clean_env)
    assert both.returncode == 2 and "choose one" in both.stderr


def test_usage_errors_say_error_as_the_doctors_own_errors_do(clean_env: dict[str, str]) -> None:
    for args in (("scan", "--bogus"), ("diagnose",), ("scan", "-o", "yaml")):
        result = run_cli(*args, env=clean_env)
        assert result.returncode == 2, args
        usage, hint, _, error = result.stderr.splitlines()[:4]
        assert usage.startswith(f"Usage: prefect-cancel-doctor {args[0]} "), result.stderr
        assert hint == f"Try 'prefect-cancel-doctor {args[0]} -h' for help."
        assert error.startswith("error: ") and "Error:" not in result.stderr, result.stderr
    bare = run_cli(env=clean_env)
    assert bare.returncode == 2 and "Commands:" in bare.stdout + bare.stderr


def test_version_prints_the_package_version() -> None:
    from prefect_cancel_doctor import __version__

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"prefect-cancel-doctor {__version__}\n"


def test_shell_completion_is_offered_and_completes_commands_and_formats(tmp_path: Path) -> None:
    assert "--install-completion" in run_cli("--help").stdout
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = run_cli("--show-completion", "bash", env=env)
    assert script.returncode == 0
    assert "_PREFECT_CANCEL_DOCTOR_COMPLETE" in script.stdout  # the same name under `python -m`
    complete = {
        **os.environ,
        "_PREFECT_CANCEL_DOCTOR_COMPLETE": "complete_bash",
        "COMP_WORDS": "prefect-cancel-doctor scan --format ",
        "COMP_CWORD": "3",
    }
    assert run_cli(env=complete).stdout.split() == ["terminal", "markdown", "json"]


@pytest.mark.parametrize("command", ["scan", "diagnose", "inspect", "report", "schedule", "demo"])
def test_every_command_help_ends_with_examples(command: str) -> None:
    text = run_cli(command, "--help").stdout
    lines = text[text.index("Examples:") :].splitlines()[1:]
    examples = [line.strip() for line in lines if line.startswith("    ")]
    assert examples, text
    # one example a line, as written: click does not re-wrap them into a paragraph
    assert all(example.startswith(f"prefect-cancel-doctor {command}") for example in examples)


def test_h_is_help_on_every_command() -> None:
    from prefect_cancel_doctor.cli import app

    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert {"scan", "diagnose", "inspect", "resolve", "watch", "report", "schedule", "agent", "demo"} <= set(
        commands
    )
    for command in ["", *commands]:
        short = run_cli(*([command] if command else []), "-h")
        assert short.returncode == 0, (command, short.stderr)
        assert short.stdout == run_cli(*([command] if command else []), "--help").stdout, command


@pytest.mark.parametrize("command", ["scan", "diagnose", "inspect", "report"])
def test_report_commands_take_the_format_as_o_and_the_file_as_output_file(command: str) -> None:
    text = run_cli(command, "--help").stdout
    assert "-o, -f, --output, --format <terminal|markdown|" in text  # -o picks the format, as in Prefect
    assert "--output-file FILE" in text
    assert "markdown" in text and "--samples-detail" in text


def _sleeper(tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    script = tmp_path / "sleeper.py"
    script.write_text("import sys, time\nprint('ready', flush=True)\ntime.sleep(600)  # here\n")
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


#: A process that carries a run's id, as the flow's own processes (and their children) do.
OF_A_RUN = {"PREFECT__FLOW_RUN_ID": "0b6c9d6e-0000-4000-8000-000000000001"}


def test_inspect_json_stdout_is_only_json(tmp_path: Path, clean_env: dict[str, str]) -> None:
    child = _sleeper(tmp_path, **OF_A_RUN)
    try:
        result = run_cli(
            "inspect", "--pid", str(child.pid), "--format", "json", "--samples", "2", env=clean_env
        )
        assert result.returncode == 1, result.stderr
        document = json.loads(result.stdout)
        verdict = document["runs"][0]["verdict"]
        assert verdict["blocking_call"]["kind"] == "sleep"
        assert verdict["blocking_call"]["filename"] == str(tmp_path / "sleeper.py")
        assert verdict["blocking_call"]["line"] == 3
        assert document["schema_version"] == 1
        (process,) = document["runs"][0]["target"]["processes"]
        assert process["samples"] == 2 and "threads" not in process, "the latest sample only, once"
        assert {t["pid"] for t in document["runs"][0]["threads"]} == {child.pid}
        detailed = run_cli(
            "inspect",
            "--pid",
            str(child.pid),
            "-f",
            "json",
            "--samples",
            "2",
            "--samples-detail",
            env=clean_env,
        )
        (process,) = json.loads(detailed.stdout)["runs"][0]["target"]["processes"]
        assert len(process["threads"]) == 2, "--samples-detail: every sample"
    finally:
        child.kill()
        child.wait()


def test_inspect_of_a_process_that_is_no_flow_says_so_and_exits_2(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    child = _sleeper(tmp_path)
    try:
        result = run_cli("inspect", "--pid", str(child.pid), "--samples", "1", env=clean_env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: process {child.pid} is not a Prefect flow")
        assert "hint:" in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""
        anyway = run_cli(
            "inspect", "--pid", str(child.pid), "--samples", "1", "--any-process", "-f", "json", env=clean_env
        )
        assert anyway.returncode == 1, anyway.stderr
        assert json.loads(anyway.stdout)["runs"][0]["verdict"]["blocking_call"]["line"] == 3
    finally:
        child.kill()
        child.wait()


def test_o_json_picks_the_format_and_writes_no_file(tmp_path: Path, clean_env: dict[str, str]) -> None:
    child = _sleeper(tmp_path, **OF_A_RUN)
    here = tmp_path / "cwd"
    here.mkdir()
    try:
        for flags in (("-o", "json"), ("--output", "json"), ("--output=json",)):
            result = subprocess.run(
                [*CLI, "inspect", "--pid", str(child.pid), "--samples", "1", *flags],
                capture_output=True,
                text=True,
                env=clean_env,
                cwd=here,
                timeout=120,
            )
            assert result.returncode == 1, (flags, result.stderr)
            assert json.loads(result.stdout)["runs"][0]["verdict"]["blocking_call"]["line"] == 3, flags
            assert "report written" not in result.stderr
            assert list(here.iterdir()) == [], f"{flags}: no file named json (or any other)"
        # A file name given to -o, as before the change, is refused with the formats it takes.
        old_style = run_cli("inspect", "--pid", str(child.pid), "-o", "ticket.md", env=clean_env)
        assert old_style.returncode == 2
        assert "'ticket.md' is not one of 'terminal', 'markdown', 'json'" in old_style.stderr
    finally:
        child.kill()
        child.wait()


def test_output_file_writes_the_report_to_a_file_and_nothing_to_stdout(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    child = _sleeper(tmp_path, **OF_A_RUN)
    target = tmp_path / "out" / "ticket.md"
    target.parent.mkdir()
    try:
        result = run_cli(
            "inspect",
            "--pid",
            str(child.pid),
            "--samples",
            "1",
            "-o",
            "markdown",
            "--output-file",
            str(target),
            env=clean_env,
        )
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert f"report written to {target}" in result.stderr
        text = target.read_text()
        assert text.startswith("# Flow runs stuck in Cancelling")
        assert "sleeper.py:3" in text and "```python" in text
        assert [p.name for p in target.parent.iterdir()] == ["ticket.md"], "no temporary file left"
        unwritable = run_cli(
            "inspect",
            "--pid",
            str(child.pid),
            "--samples",
            "1",
            "--output-file",
            str(tmp_path / "no" / "such" / "x.md"),
            env=clean_env,
        )
        assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr
        # The variable of the file's former flag (-o/--output FILE) still names the file.
        json_file = tmp_path / "out" / "run.json"
        by_env = run_cli(
            "inspect", "--pid", str(child.pid), "--samples", "1", "-f", "json",
            env={**clean_env, "PCD_OUTPUT": str(json_file)},
        )  # fmt: skip
        assert by_env.returncode == 1 and by_env.stdout == "", by_env.stderr
        assert json.loads(json_file.read_text())["runs"][0]["verdict"]["blocking_call"]["line"] == 3
    finally:
        child.kill()
        child.wait()


def test_debug_image_flag_reaches_the_pod_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_cancel_doctor.cli.options import kube
    from prefect_cancel_doctor.core.options import DEBUG_IMAGE_ENV, Options

    monkeypatch.delenv(DEBUG_IMAGE_ENV, raising=False)
    options = kube(Options(), "/k/config", "prod", "registry.local/pcd-debug:1")
    assert (options.kubeconfig, options.kube_context) == ("/k/config", "prod")
    assert options.kube_debug_image == "registry.local/pcd-debug:1"
    assert DEBUG_IMAGE_ENV not in os.environ  # passed in the options, not through the environment
    monkeypatch.setenv(
        DEBUG_IMAGE_ENV, "registry.local/from-env:2"
    )  # the variable alone, as a deployment sets it
    assert kube(Options(), None, None).kube_debug_image == "registry.local/from-env:2"
    for command in ("scan", "diagnose", "inspect"):
        done = run_cli(command, "--help")
        assert "--debug-image" in done.stdout, command
