"""An answer larger than the cap is refused after reading the cap at most: memory stays bounded.

GIVEN a real server answering 60 MB (chunked, or with its Content-Length), WHEN the doctor asks
the Prefect API or the Kubernetes API in a fresh interpreter, THEN it refuses the answer with one
clear error (exit 3 for Prefect, a Kubernetes API error for Kubernetes) and its peak memory grows
by about the cap (32 MiB, or `PCD_MAX_RESPONSE_MB`), not by the answer's size. Before the cap a
60 MB answer took 359 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import clean_environ, closed_port
from tests.hostile_http import HugeServer

pytestmark = pytest.mark.timeout(120)
SIXTY_MB = 60 * 10**6

#: Runs one request in a fresh interpreter: its error and how much its peak memory grew (MiB).
PROBE = """
import json, resource, sys
from prefect_cancel_doctor.errors import DoctorError

kind, url, closed = sys.argv[1], sys.argv[2], sys.argv[3]


def client(base):
    if kind == "prefect":
        from prefect_cancel_doctor.clients.prefect_api import PrefectApi
        from prefect_cancel_doctor.clients.settings import Connection

        return PrefectApi(Connection(base + "/api")).check
    from prefect_cancel_doctor.clients.kube_api import KubeClient
    from prefect_cancel_doctor.clients.kube_config import KubeConnection

    return lambda: KubeClient(KubeConnection(base, "test")).list_pods("prod", "job-name=etl")


try:  # warm up: everything a request loads is loaded before the measure
    client(f"http://127.0.0.1:{closed}")()
except DoctorError:
    pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    client(url)()
    error = None
except DoctorError as exc:
    error = [type(exc).__name__, str(exc), exc.hint, exc.exit_code]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_mib": (after - before) / 1024, "error": error}))
"""


def probe(kind: str, server: HugeServer, **env: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, kind, server.url, str(closed_port())],
        capture_output=True,
        text=True,
        timeout=100,
        env=clean_environ(**env),
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_60_mb_prefect_answer_is_refused_within_the_cap(chunked: bool) -> None:
    with HugeServer(SIXTY_MB, chunked=chunked) as server:
        result = probe("prefect", server)
    assert result["grew_mib"] < 32 + 16, result
    kind, message, hint, exit_code = result["error"]
    assert kind == "ApiRefused" and exit_code == 3, result
    assert "answered POST /flow_runs/filter with more than 32 MiB: refused" in message, message
    assert "PCD_MAX_RESPONSE_MB" in hint


def test_the_cap_is_a_setting_and_the_kubernetes_api_keeps_it_too() -> None:
    with HugeServer(SIXTY_MB, items=True) as server:
        result = probe("kubernetes", server, PCD_MAX_RESPONSE_MB="8")
    assert result["grew_mib"] < 8 + 16, result
    kind, message, hint, exit_code = result["error"]
    assert kind == "KubeApiError" and exit_code == 2, result
    assert "answered GET /api/v1/namespaces/prod/pods with more than 8 MiB: refused" in message
    assert "PCD_MAX_RESPONSE_MB" in hint


def test_an_answer_under_the_cap_is_read_whole() -> None:
    with HugeServer(3 * 10**6) as server:
        result = probe("prefect", server)
    assert result["error"] is None, result
