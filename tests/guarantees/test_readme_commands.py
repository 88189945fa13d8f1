"""Every command the README shows is run here, as written, or named below as an example and why.

GIVEN the README's shell blocks, WHEN each `prefect-cancel-doctor …` line is run as written
against the session's staged stuck runs (the name `crafty-lemur` replaced by a staged run's
name; `--profile prod` a profile pointing at that server), THEN each exits as the README's exit
codes say, prints what it promises, and never a traceback. A README line that is neither run
here nor listed as an example fails `test_every_readme_command_is_run_or_an_example`.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import CLI, clean_environ, read_terminal, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: The run name the README's examples use.
EXAMPLE_RUN = "crafty-lemur"

#: The doctor's commands this module runs (the README's text, comments stripped).
RUN_HERE = {
    "prefect-cancel-doctor scan",
    f"prefect-cancel-doctor diagnose {EXAMPLE_RUN}",
    f"prefect-cancel-doctor resolve {EXAMPLE_RUN}",
    "prefect-cancel-doctor watch",
    "prefect-cancel-doctor report --since 24h",
    "prefect-cancel-doctor scan --profile prod",
}
#: Other lines, and where they are run or why they cannot be here.
ELSEWHERE = {
    # the quick start: .ci/run runs the test command from a fresh clone; the demo command is
    # run from a fresh clone before each release (docs/development.md), as it stages its own
    # server and runs: the same staging as this session's `demo_environment`.
    "python3 -m venv .venv && .venv/bin/pip install -e '.[prefect]' && .venv/bin/prefect-cancel-doctor demo",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
    # the demo's other stagings: tests/ecs/test_demo_ecs.py runs `demo --ecs` (with -o json, to read
    # its verdicts; the test environment has the demo-ecs extra's packages); `--docker` and
    # `--kubernetes` stage through the same code as tests/docker's `docker_environment` and
    # tests/kubernetes's staging (`docker_demo_environment`, `kube_demo_environment`), but the
    # commands themselves are not run here
    ".venv/bin/prefect-cancel-doctor demo --docker",
    ".venv/bin/prefect-cancel-doctor demo --kubernetes",
    ".venv/bin/pip install -e '.[prefect,demo-ecs]' && .venv/bin/prefect-cancel-doctor demo --ecs",
    # they change the user's shell or tool directory: examples
    "uv tool install .",
    "source .venv/bin/activate",
    # a real server or Cloud workspace of the reader's
    "export PREFECT_API_URL=http://prefect.internal:4200/api",
    "export PREFECT_API_URL=https://api.prefect.cloud/api/accounts/ACCOUNT/workspaces/WORKSPACE",
    "export PREFECT_API_KEY=pnu_…",
}
WHEEL = "pip wheel . --no-deps -w dist/"


def readme_commands() -> list[str]:
    """Each line of the README's ```bash blocks, its trailing comment and surrounding space removed."""
    commands, inside = [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and line.strip():
            commands.append(re.split(r"\s{2,}#", line)[0].strip())
    return commands


def test_every_readme_command_is_run_or_an_example() -> None:
    commands = readme_commands()
    assert len(commands) >= 10, commands
    unknown = [c for c in commands if c not in RUN_HERE | ELSEWHERE | {WHEEL}]
    assert not unknown, f"README commands neither run by a test nor listed as examples: {unknown}"
    assert set(commands) >= RUN_HERE, RUN_HERE - set(commands)  # this module runs what the README shows


def _argv(command: str, run_name: str) -> list[str]:
    words = shlex.split(command.replace(EXAMPLE_RUN, run_name))
    assert words[0] == "prefect-cancel-doctor"
    return words[1:]


def _env(environment: DemoEnvironment, home: Path) -> dict[str, str]:
    return clean_environ(
        PREFECT_API_URL=environment.api_url, PREFECT_HOME=str(home), COLUMNS="100", NO_COLOR="1"
    )


@pytest.mark.parametrize("command", sorted(RUN_HERE - {f"prefect-cancel-doctor resolve {EXAMPLE_RUN}",
                                                         "prefect-cancel-doctor watch"}))  # fmt: skip
def test_the_readme_command_runs_as_written(
    demo_environment: DemoEnvironment, command: str, tmp_path: Path
) -> None:
    run = demo_environment.run("sleep")
    env = _env(demo_environment, tmp_path)
    if "--profile prod" in command:  # the reader's profile: here, this server's
        env.pop("PREFECT_API_URL")
        profiles = f'[profiles.default]\n[profiles.prod]\nPREFECT_API_URL = "{demo_environment.api_url}"\n'
        (tmp_path / "profiles.toml").write_text('active = "default"\n' + profiles)
    done = run_cli(*_argv(command, run.run_name), env=env)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    if command.startswith("prefect-cancel-doctor report"):
        # no --fail-on: exit 0, and the stuck runs listed with their causes
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Stuck in Cancelling now" in done.stdout and run.run_name in done.stdout
    else:
        assert done.returncode == 1, done.stderr[-3000:]  # stuck runs found
        assert run.run_name in done.stdout and run.expected_cause.value in done.stdout
        assert f"prefect-cancel-doctor resolve {run.run_name}" in done.stdout  # the first fix


def test_resolve_as_written_shows_its_plan_and_a_no_does_nothing(
    demo_environment: DemoEnvironment, tmp_path: Path
) -> None:
    run = demo_environment.run("sleep")
    argv = _argv(f"prefect-cancel-doctor resolve {EXAMPLE_RUN}", run.run_name)
    primary, secondary = pty.openpty()
    env = _env(demo_environment, tmp_path)
    with subprocess.Popen(
        [*CLI, *argv], stdin=secondary, stdout=secondary, stderr=secondary, env=env
    ) as child:
        os.close(secondary)
        out = read_terminal(primary, child, "[y/N]")
        os.write(primary, b"n\n")
        out += read_terminal(primary, child, None)
        assert child.wait(timeout=30) == 5, out  # declined: nothing done
    os.close(primary)
    assert "Traceback" not in out and run.run_name in out and "SIGTERM" in out, out
    assert demo_environment.harness.state_type(run.run_id) == "CANCELLING"  # untouched


def test_watch_as_written_follows_the_stuck_runs_until_interrupted(
    demo_environment: DemoEnvironment, tmp_path: Path
) -> None:
    run = demo_environment.run("sleep")
    env = _env(demo_environment, tmp_path)
    argv = _argv("prefect-cancel-doctor watch", run.run_name)
    with subprocess.Popen(
        [*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as child:
        assert child.stdout is not None
        seen = ""
        deadline = time.monotonic() + 120
        while run.run_name not in seen and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            seen += line
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    assert run.run_name in seen and run.expected_cause.value in seen + out, seen + out
    assert child.returncode == 130 and "Traceback" not in err, err[-3000:]


def test_the_readme_wheel_command_builds_a_wheel(tmp_path: Path) -> None:
    argv = shlex.split(WHEEL.replace("dist/", str(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.glob("prefect_cancel_doctor-*-py3-none-any.whl")], list(
        tmp_path.iterdir()
    )
