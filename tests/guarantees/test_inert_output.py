"""Inert output, end to end: what a flow writes in its source, names and messages prints as escapes.

GIVEN a real local Prefect server and a run stuck in Cancelling whose real process blocks on a
line whose comment holds raw ESC sequences (clear screen), an OSC 52 clipboard write, C1
controls, every bidi control (embeddings, overrides, isolates, marks), line and paragraph
separators and a BOM — and a run name, flow name and state message holding them too —
WHEN `scan` (terminal, JSON, Markdown), `diagnose` and `scan --publish` run against it,
THEN the blocking line is shown, and no output (stdout, stderr, the JSON's decoded strings,
the published Markdown artifact and verdict event) holds a raw byte of any of them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import clean_environ, run_cli

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]

#: Each character issue 21 found printed raw, and its kin.
RAW = (
    "\x1b",  # ESC: CSI and OSC sequences
    "\x07",  # BEL, which ends an OSC
    "\x9b",  # C1 CSI
    "\x9d",  # C1 OSC
    "\x85",  # C1 NEL, a line break to some viewers
    "\u202a\u202b\u202c\u202d\u202e",  # bidi embeddings and overrides
    "\u2066\u2067\u2068\u2069",  # bidi isolates
    "\u200e\u200f\u061c",  # bidi marks
    "\u2028\u2029",  # line and paragraph separators
    "\ufeff",  # BOM
)
RAW_CHARS = "".join(RAW)
#: A clear-screen, a clipboard write (OSC 52 of "rm -rf ~"), a C1 CSI, then the rest.
HOSTILE = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\x9b31m\x9d0;t\x07" + "".join(RAW[3:])
#: Flow names may not hold / % & > < (the server's pattern); these may.
HOSTILE_NAME = "etl\u202egnp.exe\u202c\u200e\u2028\ufeff"

PROGRAM = f"""\
import time
print("ready", flush=True)
time.sleep(3600)  # wait for the warehouse {HOSTILE} end
"""


def _raw_in(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if c in RAW_CHARS})


def _strings(document: Any) -> Iterator[str]:
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for key, value in document.items():
            yield key
            yield from _strings(value)
    elif isinstance(document, list):
        for item in document:
            yield from _strings(item)


def _progress(message: str) -> None:
    print(f"[inert] {message}", file=sys.__stderr__)


class _RetryOn503(httpx.HTTPTransport):
    """The local server's SQLite answers 503 while busy."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(20):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(0.25)
        return response


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, int]]:
    """A local server (its own: `scan --publish` writes to it), and a run stuck in Cancelling
    whose real process sleeps on the hostile line: (API URL, run id, line number)."""
    pytest.importorskip("prefect")
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    workdir = tmp_path_factory.mktemp("inert")
    program = workdir / "hostile_flow.py"
    program.write_text(PROGRAM, encoding="utf-8")
    line = PROGRAM.split("\n").index(next(s for s in PROGRAM.split("\n") if "time.sleep" in s)) + 1
    with LocalPrefect(log=_progress) as prefect:
        api = httpx.Client(base_url=prefect.api_url + "/", transport=_RetryOn503(), timeout=30)
        flow = api.post("flows/", json={"name": HOSTILE_NAME}).raise_for_status().json()
        run = api.post(
            "flow_runs/",
            json={"flow_id": flow["id"], "name": f"nightly{HOSTILE}", "state": {"type": "RUNNING"}},
        )
        run_id = run.raise_for_status().json()["id"]
        env = {**os.environ, "PREFECT__FLOW_RUN_ID": run_id}
        process = subprocess.Popen([sys.executable, str(program)], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
            pid = f"{socket.gethostname()}:{process.pid}"
            api.patch(f"flow_runs/{run_id}", json={"infrastructure_pid": pid}).raise_for_status()
            state = {"type": "CANCELLING", "message": f"cancelled by {HOSTILE}"}
            cancelling = {"state": state, "force": True}
            api.post(f"flow_runs/{run_id}/set_state", json=cancelling).raise_for_status()
            yield prefect.api_url, run_id, line
        finally:
            process.kill()
            process.wait()
            api.close()


def test_no_output_holds_a_raw_control_bidi_or_separator_character(
    hostile_run: tuple[str, str, int], tmp_path: Path
) -> None:
    api_url, run_id, line = hostile_run
    env = clean_environ(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path), COLUMNS="250")
    outputs: dict[tuple[str, ...], str] = {}
    for command in (
        ("scan", "--samples", "1", "--format", "terminal"),
        ("scan", "--samples", "1", "--format", "markdown"),
        ("scan", "--samples", "1", "--format", "json"),
        ("diagnose", run_id, "--samples", "1", "--format", "terminal"),
        ("diagnose", run_id, "--samples", "1", "--format", "markdown"),
        ("scan", "--samples", "1", "--publish", "--format", "json"),
    ):
        done = run_cli(*command, env=env)
        assert done.returncode == 1, (command, done.stderr)  # a stuck run
        assert "Traceback" not in done.stderr
        assert _raw_in(done.stdout + done.stderr) == [], command
        outputs[command] = done.stdout

    # The blocking line is there, its comment shown as escapes.
    document = json.loads(outputs[("scan", "--samples", "1", "--format", "json")])
    assert not [s for s in _strings(document) if _raw_in(s)], "a decoded JSON string holds a raw character"
    entry = next(e for e in document["runs"] if e["flow_run"] and e["flow_run"]["id"] == run_id)
    call = entry["verdict"]["blocking_call"]
    assert call["line"] == line and call["code"].startswith("time.sleep(3600)  # wait for the warehouse")
    assert "\\x1b]52;c;" in call["code"] and "\\u202e" in call["code"] and "\\u2028" in call["code"]
    assert "\\u200e" in entry["flow_run"]["flow_name"] and "\\u2029" in entry["flow_run"]["state_message"]
    for shown, text in outputs.items():
        if shown[-1] != "json":
            assert "time.sleep(3600)" in text and "\\x1b" in text, shown

    # What was published: the run's Markdown artifact and its verdict event.
    api = httpx.Client(base_url=api_url + "/", transport=_RetryOn503(), timeout=30)
    related = {"related": {"id": [f"prefect.flow-run.{run_id}"]}, "order": "ASC"}
    with api:
        artifacts = api.post("artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        deadline = time.monotonic() + 60  # the server stores events a moment after it accepts them
        while not (
            events := api.post("events/filter", json={"filter": related}).raise_for_status().json()["events"]
        ):
            assert time.monotonic() < deadline, "the verdict event never appeared"
            time.sleep(0.5)
    published = [a["data"] for a in artifacts.raise_for_status().json()]
    assert published and "time.sleep(3600)" in published[0] and "\\x1b" in published[0]
    payloads = [e["payload"] for e in events]
    assert any("time.sleep(3600)" in s for s in _strings(payloads))
    for text in (*published, *_strings(payloads)):
        assert _raw_in(text) == [], text
