"""Secrets never reach an output: one redactor for locals, source lines, command lines and URLs
(by form), and every secret the doctor holds hidden by value in all it prints, writes and publishes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_cancel_doctor.act.resolve import ActionLog, resolve_diagnosed
from prefect_cancel_doctor.clients.kube_api import KubeClient
from prefect_cancel_doctor.clients.kube_config import KubeConnection, resolve_kube_connection
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.core.redact import (
    REDACTED,
    forget,
    hold,
    redact_argv,
    redact_code,
    redact_url_passwords,
)
from prefect_cancel_doctor.errors import DoctorError
from prefect_cancel_doctor.model import Cause, Diagnosis, InfraKind, ProcessSample, Role, Target, Verdict
from prefect_cancel_doctor.proc import procfs
from tests.diagnose.test_rules import run_ref
from tests.helpers import clean_environ, run_cli


def test_command_lines_lose_their_secrets_and_keep_their_shape() -> None:
    argv = (
        "python",
        "etl.py",
        "--password",
        "hunter2",
        "--api-token=tok123",
        "AWS_SECRET_ACCESS_KEY=abc",
        "postgresql://etl:s3cret@db:5432/x",
        "--pool",
        "default",
    )
    assert redact_argv(argv) == (
        "python",
        "etl.py",
        "--password",
        REDACTED,
        f"--api-token={REDACTED}",
        f"AWS_SECRET_ACCESS_KEY={REDACTED}",
        f"postgresql://etl:{REDACTED}@db:5432/x",
        "--pool",
        "default",
    )


def test_prefect_words_survive_redaction() -> None:
    argv = ("prefect", "worker", "start", "--pool", "p", "--type", "process")
    assert redact_argv(argv) == argv
    assert redact_argv(("python", "-m", "prefect.engine")) == ("python", "-m", "prefect.engine")


def test_urls_and_source_lines() -> None:
    assert redact_url_passwords("http://admin:pw@host/api") == f"http://admin:{REDACTED}@host/api"
    assert redact_code('session = "abc"') == f'session = "{REDACTED}"'
    assert redact_code('client_key: "abc"') == f'client_key: "{REDACTED}"'


# -- issue 21: every form, every path -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _nothing_held() -> Iterator[None]:
    forget()
    yield
    forget()


def _leaks(text: str, secrets: tuple[str, ...]) -> list[str]:
    """The secrets `text` shows, whole or their first six characters, raw or in base64."""
    found = []
    for secret in secrets:
        encoded = base64.b64encode(secret.encode()).decode()
        if secret[:6] in text or encoded[:8] in text:
            found.append(secret)
    return found


#: A flow whose command line and locals carry each form issue 21 found shown.
FORMS_PROGRAM = """
import time
def _never():
    connect(password="pw-prog-7c1")
def work():
    headers = {"Authorization": "Bearer tok-local-7c1"}
    dsn = "redis://:pw-local-7c1@cache:6379/0"
    pg = "postgres://etl:pwpg-local-7c1@db/x"
    options = ["--api-key", "pnu_LOCALARGV7c1"]
    print("ready", flush=True)
    time.sleep(600)
work()
"""
FORMS_ARGV = (
    "--api-key",
    "pnu_ARGVKEY7c1",
    "-p",
    "pw-argv-7c1",
    "redis://:pw-redis-7c1@cache:6379/0",
    "postgres://etl:pwpg-argv-7c1@db/x",
    "-H",
    "Authorization: Bearer tok-argv-7c1",
    "pnu_HELDKEYonlybyvalue7c1",
)
FORMS_SECRETS = (
    "pw-prog-7c1",
    "tok-local-7c1",
    "pw-local-7c1",
    "pwpg-local-7c1",
    "pnu_LOCALARGV7c1",
    "pnu_ARGVKEY7c1",
    "pw-argv-7c1",
    "pw-redis-7c1",
    "pwpg-argv-7c1",
    "tok-argv-7c1",
    "pnu_HELDKEYonlybyvalue7c1",
)


@contextlib.contextmanager
def _running(program: str) -> Iterator[subprocess.Popen[str]]:
    """`python -c PROGRAM FORMS_ARGV`, the run's id in its environment, once it printed "ready"."""
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": run_ref().id}
    argv = ["python", "-c", program, *FORMS_ARGV]
    target = subprocess.Popen(argv, executable=sys.executable, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        yield target
    finally:
        target.kill()
        target.wait()


@pytest.fixture
def forms_target() -> Iterator[subprocess.Popen[str]]:
    with _running(FORMS_PROGRAM) as target:
        yield target


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")
def test_no_form_of_a_secret_in_command_lines_or_locals_of_a_real_process(
    forms_target: subprocess.Popen[str], tmp_path: Path
) -> None:
    # GIVEN a real process whose command line and locals hold each form issue 21 found shown
    # WHEN inspected with --locals in every format
    env = clean_environ(PREFECT_HOME=str(tmp_path))
    for fmt in ("terminal", "markdown", "json"):
        command = ("inspect", "--pid", str(forms_target.pid), "--any-process", "--locals", "--samples", "1")
        done = run_cli(*command, "--format", fmt, env={**env, "COLUMNS": "250"})
        # THEN none of them is shown, and the command line keeps its shape
        assert done.returncode in (0, 1), done.stderr
        assert _leaks(done.stdout + done.stderr, FORMS_SECRETS[:-1]) == [], fmt
        if fmt == "json":
            proc = json.loads(done.stdout)["runs"][0]["target"]["processes"][0]["proc"]
            assert proc["cmdline"][3:7] == ["--api-key", "<redacted>", "-p", "<redacted>"]
            assert "Authorization: Bearer <redacted>" in proc["cmdline"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")
def test_no_secret_in_the_resolve_plan_nor_the_action_log(tmp_path: Path) -> None:
    # GIVEN the doctor holds an API key (its client registered it), and a run's real process
    # whose command line carries every form and that key, the first within the 80 characters
    # the plan and the log keep of a command line
    hold("pnu_HELDKEYonlybyvalue7c1")
    with _running('import time;print("ready",flush=True);time.sleep(600)') as target:
        proc = procfs.read_process(target.pid, read_sockets=False)
    assert proc is not None and proc.flow_run_id == run_ref().id
    sample = ProcessSample(target.pid, Role.ENGINE, proc, (), native=False)
    diagnosis = Diagnosis(
        run_ref(),
        Target(InfraKind.PROCESS, "local", processes=(sample,)),
        Verdict(Cause.CANCEL_NOT_OBSERVED, "summary", 0.9, None, (), ()),
    )
    # WHEN resolve prints its plan, and logs what it did to the process (as `execute` does)
    said: list[str] = []
    plans = resolve_diagnosed(
        [diagnosis],
        None,  # type: ignore[arg-type]  # a dry run calls no API
        confirm=lambda: True,
        dry_run=True,
        say=said.append,
    )
    planned = plans[0][0].processes[0]
    log = ActionLog(tmp_path / "actions.jsonl")
    log.record(run_ref().id, f"pid {planned.pid} ({planned.command[:80]})", "SIGTERM", "sent")
    log.record(run_ref().id, "pid 1 (prefect --key pnu_HELDKEYonlybyvalue7c1)", "SIGTERM", "sent")
    # THEN neither holds a secret, not even its first characters
    assert "--api-key <redacted>" in "\n".join(said)
    assert _leaks("\n".join(said), FORMS_SECRETS) == []
    assert _leaks(log.path.read_text(), FORMS_SECRETS) == []


# -- credentials echoed back by the Prefect API ---------------------------------------------------

URL_PASSWORD = "pw-url-7c1"
API_KEY = "pnu_APIKEYECHO7c1"
AUTH_STRING = "admin:pw-auth-7c1"
BASIC_URL = base64.b64encode(f"admin:{URL_PASSWORD}".encode()).decode()
BASIC_AUTH = base64.b64encode(AUTH_STRING.encode()).decode()
ECHOED = (URL_PASSWORD, API_KEY, "pw-auth-7c1", BASIC_URL, BASIC_AUTH)


def _echo_headers(request: httpx.Request) -> httpx.Response:
    """A server that puts the request's headers in its error body (a debug page, a proxy)."""
    headers = {"authorization": request.headers.get("authorization"), **request.headers}
    return httpx.Response(500, json={"detail": "internal error", "request_headers": headers})


def _echo_cut_at_200(request: httpx.Request) -> httpx.Response:
    """The Authorization header across the 200th character, where the doctor cuts an error body."""
    header = request.headers.get("authorization", "")
    return httpx.Response(500, text="x" * (200 - len(header) // 2) + header)


@pytest.mark.parametrize("echo", [_echo_headers, _echo_cut_at_200])
@pytest.mark.parametrize(
    "connection",
    [
        Connection(f"http://admin:{URL_PASSWORD}@prefect.test/api"),
        Connection("http://prefect.test/api", api_key=API_KEY),
        Connection("http://prefect.test/api", auth_string=AUTH_STRING),
    ],
    ids=["url-userinfo-basic", "api-key-bearer", "auth-string-basic"],
)
def test_a_prefect_server_echoing_credentials_shows_none(echo: Any, connection: Connection) -> None:
    api = PrefectApi(connection, transport=httpx.MockTransport(echo))
    with pytest.raises(DoctorError) as raised:
        api.flow_run("0b6c9d6e-0000-4000-8000-000000000001")
    shown = f"{raised.value} {raised.value.hint or ''}"
    assert "<redacted>" in shown
    for secret in ECHOED:
        assert secret not in shown and secret[:8] not in shown, (secret, shown)


class _EchoHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        echo = {"Authorization": self.headers.get("Authorization"), **self.headers}
        body = json.dumps({"detail": "boom", "echo": echo}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "settings",
    [
        {"PREFECT_API_URL": f"http://admin:{URL_PASSWORD}@HOST/api"},
        {"PREFECT_API_URL": "http://HOST/api", "PREFECT_API_KEY": API_KEY},
        {"PREFECT_API_URL": "http://HOST/api", "PREFECT_API_AUTH_STRING": AUTH_STRING},
    ],
    ids=["url-userinfo-basic", "api-key-bearer", "auth-string-basic"],
)
def test_the_cli_shows_no_echoed_credential(
    echo_server: str, settings: dict[str, str], tmp_path: Path
) -> None:
    # GIVEN a real server that answers every request 500 with the request's headers in the body
    env = clean_environ(
        PREFECT_HOME=str(tmp_path), **{k: v.replace("HOST", echo_server) for k, v in settings.items()}
    )
    # WHEN the doctor scans, writes a report file and diagnoses a run against it
    for command in (
        ("scan",),
        ("scan", "--output-file", str(tmp_path / "report.md"), "-o", "markdown"),
        ("diagnose", "x"),
    ):
        done = run_cli(*command, env=env)
        # THEN it fails as the API's error, and prints none of the credentials sent
        assert done.returncode == 3, (command, done.stderr)
        assert "<redacted>" in done.stderr, done.stderr
        for secret in ECHOED:
            assert secret not in done.stdout + done.stderr and secret[:8] not in done.stderr, (
                secret,
                done.stderr,
            )


# -- credentials echoed back by the Kubernetes API and credential plugins -------------------------

KUBE_TOKEN = "kubeBearerTokenOnlyLetters"  # no digit, no symbol: only its value tells it is one
KUBE_PASSWORD = "kube-pw-7c1"


def _kube_echo(request: httpx.Request) -> httpx.Response:
    status = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Unauthorized",
        "code": 401,
        "message": f"invalid credentials {request.headers.get('authorization')}",
    }
    return httpx.Response(401, json=status)


@pytest.mark.parametrize(
    "connection",
    [
        KubeConnection("https://kube.test", "test", token=KUBE_TOKEN),
        KubeConnection("https://kube.test", "test", username="admin", password=KUBE_PASSWORD),
    ],
    ids=["bearer", "basic"],
)
def test_a_kubernetes_api_echoing_credentials_shows_none(connection: KubeConnection) -> None:
    client = KubeClient(connection, transport=httpx.MockTransport(_kube_echo))
    with pytest.raises(DoctorError) as raised:
        client.request("GET", "/api/v1/namespaces/default/pods")
    shown = f"{raised.value} {raised.value.hint or ''} {getattr(raised.value, 'api_message', '')}"
    basic = base64.b64encode(f"admin:{KUBE_PASSWORD}".encode()).decode()
    assert "<redacted>" in shown
    for secret in (KUBE_TOKEN, KUBE_PASSWORD, basic):
        assert secret not in shown, (secret, shown)


def test_a_token_file_echoed_back_is_hidden(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("kubeProjectedTokenFromAFile\n")
    client = KubeClient(
        KubeConnection("https://kube.test", "test", token_file=str(token_file)),
        transport=httpx.MockTransport(_kube_echo),
    )
    with pytest.raises(DoctorError) as raised:
        client.request("GET", "/api/v1/namespaces/default/pods")
    assert "kubeProjectedTokenFromAFile" not in str(raised.value)


PLUGIN_TOKEN = "pluginTokenWrittenToStderr"
PLUGIN_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwbHVnaW4ifQ.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    "plugin",
    [
        # it printed its credential, then failed and said the token on stderr
        f"print(json.dumps({{'kind': 'ExecCredential', 'status': {{'token': '{PLUGIN_TOKEN}'}}}}))\n"
        f"sys.stderr.write('refresh failed for token {PLUGIN_TOKEN}\\n')",
        # nothing on stdout: the token is told by its form (a JWT, a header)
        f"sys.stderr.write('sending Authorization: Bearer {PLUGIN_TOKEN} failed, token {PLUGIN_JWT}\\n')",
    ],
    ids=["token-printed-then-failed", "token-only-on-stderr"],
)
def test_an_exec_plugin_that_fails_with_its_token_on_stderr_shows_none(plugin: str, tmp_path: Path) -> None:
    script = tmp_path / "plugin"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n{plugin}\nsys.exit(1)\n")
    script.chmod(0o755)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://kube.test"}}],
                "users": [
                    {
                        "name": "u",
                        "user": {
                            "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}
                        },
                    }
                ],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with pytest.raises(DoctorError) as raised:
        resolve_kube_connection(str(kubeconfig), environ={})
    shown = f"{raised.value} {raised.value.hint or ''}"
    assert "failed" in shown and "<redacted>" in shown, shown
    assert PLUGIN_TOKEN not in shown and PLUGIN_JWT[:20] not in shown, shown
