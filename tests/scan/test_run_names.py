"""`diagnose RUN`: by id or by name; no run and several runs of that name are usage errors (exit 2).

The API is replayed with httpx.MockTransport; the engine is the real one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.errors import TargetError
from prefect_cancel_doctor.scan.engine import Options, diagnose_run
from prefect_cancel_doctor.scan.run_names import find_run, is_run_id
from tests.helpers import run_cli

FLOW = "7f1c0000-0000-4000-8000-00000000f10e"


def run(
    number: int, name: str = "crafty-lemur", start: str = "2026-11-27T10:00:00.123456Z"
) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-00000000000{number}",
        "name": name,
        "flow_id": FLOW,
        "state": {"type": "CANCELLING", "name": "Cancelling", "timestamp": "2026-11-27T10:05:00Z"},
        "start_time": start,
        "infrastructure_pid": "4194000",  # no such process here
        "work_pool_name": "pool",
    }


class FakeApi:
    """Answers the reads of `diagnose` from a list of runs; records the filters it was sent."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.filters: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api")
        body = json.loads(request.content or b"{}")
        if path == "/flow_runs/filter":
            self.filters.append(body)
            wanted = body.get("flow_runs", {}).get("name", {}).get("any_")
            found = [r for r in self.runs if wanted is None or r["name"] in wanted]
            return httpx.Response(200, json=found if body.get("offset", 0) == 0 else [])
        if path.startswith("/flow_runs/"):
            found = [r for r in self.runs if r["id"] == path.rsplit("/", 1)[-1]]
            return httpx.Response(200, json=found[0]) if found else httpx.Response(404)
        if path == "/flows/filter":
            return httpx.Response(
                200, json=[{"id": FLOW, "name": "etl"}] if body.get("offset", 0) == 0 else []
            )
        return httpx.Response(200, json=[])

    def api(self, url: str = "http://prefect.test/api") -> PrefectApi:
        return PrefectApi(Connection(url), transport=httpx.MockTransport(self))


def test_ids_and_names_are_told_apart() -> None:
    assert is_run_id("06e664e5-5fa7-4eba-bb99-2dfc47082c1c")
    assert is_run_id("06e664e55fa74ebabb992dfc47082c1c")
    assert not is_run_id("crafty-lemur")
    assert not is_run_id("deadbeef")


def test_a_name_is_looked_up_by_the_servers_name_filter() -> None:
    fake = FakeApi([run(1), run(2, name="other-run")])
    with fake.api() as api:
        found = find_run(api, "crafty-lemur")
    assert found.id == run(1)["id"]
    assert fake.filters[0]["flow_runs"] == {"name": {"any_": ["crafty-lemur"]}}


def test_no_run_of_that_name_is_exit_2_naming_it() -> None:
    with FakeApi([run(1)]).api() as api, pytest.raises(TargetError) as info:
        find_run(api, "quiet-\x1b[2Jotter")
    assert info.value.exit_code == 2
    assert str(info.value).startswith("no flow run named 'quiet-\\x1b[2Jotter'")  # made inert
    assert "\x1b" not in str(info.value)


def test_several_runs_of_that_name_are_exit_2_listing_them_newest_first() -> None:
    runs = [run(1, start="2026-11-27T09:00:00Z"), run(2, start="2026-11-27T10:00:00.123456Z")]
    with FakeApi(runs).api() as api, pytest.raises(TargetError) as info:
        find_run(api, "crafty-lemur")
    message = str(info.value)
    assert info.value.exit_code == 2
    first, newest, older = message.splitlines()
    assert first == "2 flow runs are named 'crafty-lemur'; pick one by its id:"
    assert newest.split() == [
        runs[1]["id"], "flow", "etl", "state", "Cancelling", "started", "2026-11-27", "10:00:00", "UTC"
    ]  # fmt: skip
    assert runs[0]["id"] in older and "09:00:00 UTC" in older
    assert info.value.hint is not None and runs[1]["id"] in info.value.hint


def test_diagnose_by_name_is_the_run_with_its_ui_link() -> None:
    fake = FakeApi([run(1)])
    with fake.api("http://127.0.0.1:4200/api") as api:
        report = diagnose_run(api, "crafty-lemur", Options(samples=1, native=False))
    (diagnosis,) = report.runs
    assert diagnosis.flow_run is not None and diagnosis.flow_run.id == run(1)["id"]
    assert diagnosis.ui_url == f"http://127.0.0.1:4200/runs/flow-run/{run(1)['id']}"
    assert report.to_dict()["runs"][0]["ui_url"] == diagnosis.ui_url


def test_the_ui_url_option_wins_and_a_hostile_id_gets_no_link() -> None:
    hostile = {**run(1), "id": "x](http://evil)"}
    with FakeApi([run(1)]).api() as api:
        report = diagnose_run(
            api, run(1)["id"], Options(samples=1, native=False, ui_url="https://ui.example")
        )
    assert report.runs[0].ui_url == f"https://ui.example/runs/flow-run/{run(1)['id']}"
    fake = FakeApi([hostile])
    with fake.api() as api:
        report = diagnose_run(api, "crafty-lemur", Options(samples=1, native=False))
    assert report.runs[0].ui_url is None


# -- the CLI against a real HTTP server answering like the fake ---------------------------------


@pytest.fixture
def server() -> Iterator[tuple[str, FakeApi]]:
    fake = FakeApi([])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = httpx.Request(self.command, f"http://x{self.path}", content=self.rfile.read(length))
            response = fake(request)
            self.send_response(response.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api", fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_cli_lists_the_candidates_of_an_ambiguous_name(
    server: tuple[str, FakeApi], clean_env: dict[str, str]
) -> None:
    url, fake = server
    fake.runs = [run(1), run(2)]
    result = run_cli("diagnose", "crafty-lemur", "--api-url", url, env=clean_env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: 2 flow runs are named 'crafty-lemur'; pick one by its id:")
    assert run(1)["id"] in result.stderr and run(2)["id"] in result.stderr
    assert result.stdout == ""
    none = run_cli("diagnose", "no-such-run", "--api-url", url, env=clean_env)
    assert none.returncode == 2
    assert none.stderr.startswith("error: no flow run named 'no-such-run'")


def test_the_cli_diagnoses_a_unique_name_with_the_profiles_ui_url(
    server: tuple[str, FakeApi], clean_env: dict[str, str], tmp_path: Path
) -> None:
    url, fake = server
    fake.runs = [run(1)]
    (tmp_path / "profiles.toml").write_text(
        'active = "x"\n[profiles.x]\nPREFECT_UI_URL = "https://ui.example.com"\n'
    )
    env = {**clean_env, "PREFECT_HOME": str(tmp_path)}
    result = run_cli("diagnose", "crafty-lemur", "--api-url", url, "--samples", "1", "-f", "json", env=env)
    assert result.returncode == 1, result.stderr
    (entry,) = json.loads(result.stdout)["runs"]
    assert entry["flow_run"]["name"] == "crafty-lemur"
    assert entry["ui_url"] == f"https://ui.example.com/runs/flow-run/{run(1)['id']}"
