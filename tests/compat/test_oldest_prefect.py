"""The end-to-end scenarios on the oldest Prefect the package supports (pyproject: `prefect>=3.4`).

A second environment with Prefect 3.4.0 is built (cached under
~/.cache/prefect-cancel-doctor-tests/) and `tests/process/test_doctor_e2e.py`
runs there, in a subprocess, on the scenarios that every supported version
stages the same way. Left out: `observer_dead` (the "Cancellation observer
failed" give-up is newer than 3.4.0), `hook` (3.4 runs hooks in the Runner,
not a subprocess), `async_loop`, `cpu`, `lock`, `subprocess` (covered on the
newest version; they add nothing version-specific and cost time).

Prefect 3.4.0 pins no FastAPI; its server fails to start with FastAPI ≥ 0.120
(`Body(min_items=...)`), so the environment pins `fastapi<0.120`, as a user of
3.4.0 must.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.server

OLDEST = "3.4.0"
SCENARIOS = (
    "sleep,network,database,database_worker_dead,ignored,thread,fifo,pipe,gone,orphan,never_started,child"
)
ROOT = Path(__file__).parents[2]


def _environment() -> Path:
    cache = Path(os.environ.get("PCD_TEST_CACHE") or Path.home() / ".cache" / "prefect-cancel-doctor-tests")
    venv = cache / f"prefect-{OLDEST}-py{sys.version_info.major}.{sys.version_info.minor}"
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if not ready.exists() or ready.read_text() != str(ROOT):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # The test extra but prefect-aws, whose release the ECS tests use needs a newer Prefect.
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        wanted = [r for r in project["optional-dependencies"]["test"] if not r.startswith("prefect-aws")]
        install = [str(python), "-m", "pip", "install", "-q", "-e", str(ROOT), *wanted]
        subprocess.run([*install, f"prefect=={OLDEST}", "fastapi<0.120"], check=True, timeout=900)
        ready.write_text(str(ROOT))
    return python


def test_the_scenarios_hold_on_the_oldest_supported_prefect() -> None:
    python = _environment()
    version = subprocess.run(
        [str(python), "-c", "import prefect; print(prefect.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == OLDEST
    env = {**os.environ, "PCD_TEST_SCENARIOS": SCENARIOS}
    done = _run_scenarios(python, env)
    if done.returncode != 0:
        # Staging real stuck runs on a loaded 2-core machine is timing-sensitive (one failure
        # to stage in four full runs was seen, before any verdict): one more try, the first
        # failure's reasons kept in the output.
        print("first try failed:\n" + _reasons(done))
        done = _run_scenarios(python, env)
    print(_reasons(done))
    assert done.returncode == 0, _reasons(done) + done.stderr[-3000:]


def _run_scenarios(python: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [
        str(python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/process/test_doctor_e2e.py",
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


def _reasons(done: subprocess.CompletedProcess[str]) -> str:
    """pytest's `E` lines and the staging log, then its summary."""
    lines = done.stdout.splitlines()
    reasons = [line for line in lines if line.startswith(("E   ", "[stuck-runs"))][:80]
    return "\n".join([*reasons, *lines[-15:]])
