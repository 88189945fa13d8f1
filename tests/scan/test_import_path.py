"""The scan path stays light: it never imports Prefect, nor Prefect's server and client stack.

`prefect` and what only Prefect brings (SQLAlchemy, FastAPI, uvicorn, ...) cost
seconds to import; they belong to the demo, the report flow and the test
fixtures. These tests run the code in a fresh interpreter and list what it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

#: The modules `scan` needs: CLI, engine, API client, sampler, rules, renderers.
SCAN_MODULES = (
    "prefect_cancel_doctor.cli",
    "prefect_cancel_doctor.scan.engine",
    "prefect_cancel_doctor.clients.prefect_api",
    "prefect_cancel_doctor.clients.settings",
    "prefect_cancel_doctor.sample",
    "prefect_cancel_doctor.diagnose.rules",
    "prefect_cancel_doctor.render",
    "prefect_cancel_doctor.render.json",
    "prefect_cancel_doctor.render.terminal",
)
#: Prefect and what only Prefect brings; never on the scan path.
PREFECT_STACK = {
    "prefect",
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "fastapi",
    "starlette",
    "uvicorn",
    "websockets",
    "docket",
    "cloudpickle",
    "jsonschema",
    "griffe",
    "opentelemetry",
    "pendulum",
    "whenever",
    "apprise",
}
#: Also kept out of a whole scan: typer 0.29+ builds a pydantic TypeAdapter for every
#: option (hence `typer<0.29` in pyproject.toml), and `import httpx` imports its CLI's
#: pygments unless the package skips it (see prefect_cancel_doctor/__init__.py).
START_UP_HEAVY = PREFECT_STACK | {"pydantic", "pydantic_core", "pygments"}
#: Kept out of the modules' import too (httpcore loads anyio, now light, for its first request).
IMPORT_TIME_HEAVY = START_UP_HEAVY | {"anyio"}


def loaded_top_levels(code: str) -> set[str]:
    """Run `code` in a fresh interpreter and return the top-level packages it loaded."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_scan_path_loads_no_prefect_and_no_heavy_modules() -> None:
    loaded = loaded_top_levels("import " + ", ".join(SCAN_MODULES))

    assert "prefect_cancel_doctor" in loaded
    assert loaded & IMPORT_TIME_HEAVY == set()


class _EmptyApi(BaseHTTPRequestHandler):
    """A Prefect API with no runs at all: every filter answers an empty list."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def empty_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("fmt", ["json", "terminal"])
def test_a_whole_scan_loads_no_prefect_and_no_heavy_modules(empty_api: str, fmt: str, tmp_path: Path) -> None:
    """`scan` run to the end (API queried, /proc read, report rendered) in a fresh interpreter."""
    code = (
        "import sys\n"
        f"sys.argv = ['prefect-cancel-doctor', 'scan', '--api-url', {empty_api!r}, '--format', {fmt!r}]\n"
        "from prefect_cancel_doctor.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
    )
    loaded = loaded_top_levels(f"import os\nos.environ['PREFECT_HOME'] = {str(tmp_path)!r}\n{code}")

    assert {"httpx", "prefect_cancel_doctor"} <= loaded
    assert loaded & START_UP_HEAVY == set()
    # rich draws the terminal view and the spinner; JSON for a script needs neither.
    assert ("rich" in loaded) == (fmt == "terminal")
