"""A real Prefect server with CSRF protection: the doctor does Prefect's handshake.

`PREFECT_SERVER_CSRF_PROTECTION_ENABLED=true` makes the server answer 403 to any
POST without a `Prefect-Csrf-Token` (and every read of the doctor is a POST
`/…/filter`). The server is started once for this module (SQLite, a temporary
PREFECT_HOME) by the demo's `LocalPrefect`, and stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.helpers import clean_environ

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.harness import LocalPrefect

pytestmark = pytest.mark.server

DOCTOR = Path(sys.executable).parent / "prefect-cancel-doctor"


@pytest.fixture(scope="module")
def csrf_server() -> Iterator[LocalPrefect]:
    pytest.importorskip("prefect", reason="the server is Prefect's own (pip install -e '.[test]')")
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    with LocalPrefect(server_env={"PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true"}) as server:
        yield server


def test_without_the_handshake_a_post_is_refused(csrf_server: LocalPrefect) -> None:
    # The premise of the next test: a plain POST (what the doctor sent before) gets 403.
    response = httpx.post(f"{csrf_server.api_url}/flow_runs/filter", json={"limit": 1}, timeout=30)
    assert response.status_code == 403
    assert response.json() == {"detail": "Missing CSRF token."}


def test_scan_of_an_empty_csrf_protected_server_exits_0(csrf_server: LocalPrefect, tmp_path: Path) -> None:
    # GIVEN an empty server with CSRF protection and no other configuration
    env = clean_environ(PREFECT_HOME=str(tmp_path))
    # WHEN the doctor scans it
    result = subprocess.run(
        [str(DOCTOR), "scan", "--api-url", csrf_server.api_url, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    # THEN nothing is stuck, and no request was refused
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["runs"] == []
    assert "CSRF" not in result.stderr and "refused" not in result.stderr
