"""Every request has a deadline, and every command one too: a server that drips its answer ends
at the deadline, with one line and the exit code of its API, not hours later.

GIVEN a real server (a socket in this process) that sends its status line and then its body a
byte at a time, or its headers a byte at a time — each byte well within httpx's read timeout —
WHEN the doctor asks the Prefect API or the Kubernetes API, THEN the request ends at the request
deadline (`PCD_REQUEST_DEADLINE`), the command at its deadline (`--deadline`), saying which.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from prefect_cancel_doctor.clients._http import transport
from prefect_cancel_doctor.clients.kube_api import KubeClient, KubeUnreachable
from prefect_cancel_doctor.clients.kube_config import resolve_kube_connection
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.core import deadline
from prefect_cancel_doctor.errors import ApiRefused, ApiUnreachable
from tests.helpers import clean_environ, run_cli
from tests.hostile_http import DripServer

pytestmark = pytest.mark.timeout(120)
DRIPS = ["body", "headers"]


def kubeconfig_for(server: str, path: Path) -> Path:
    """A kubeconfig whose cluster is `server` (plain http), with a bearer token."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: u, user: {token: not-a-secret}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: prod}}]\n"
    )
    return path


def test_the_transport_bounds_every_socket_operation() -> None:
    # httpx offers no public hook for this: should its internals move, this says so first.
    from prefect_cancel_doctor.clients._bounded_net import BoundedBackend

    made = transport()
    assert isinstance(made._pool._network_backend, BoundedBackend)


@pytest.mark.parametrize("mode", DRIPS)
def test_a_dripping_prefect_api_ends_at_the_request_deadline(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCD_REQUEST_DEADLINE", "1.5")
    with DripServer(mode) as server, PrefectApi(Connection(server.url + "/api")) as api:
        started = time.monotonic()
        with pytest.raises(ApiUnreachable) as info:
            api.cancelling_runs()
        took = time.monotonic() - started
    assert 1.4 <= took < 2.5, took
    assert info.value.exit_code == 3
    assert "did not answer POST /flow_runs/filter within the request deadline (1.5 s" in str(info.value)
    assert "PCD_REQUEST_DEADLINE" in (info.value.hint or "")


@pytest.mark.parametrize("mode", DRIPS)
def test_a_dripping_kubernetes_api_ends_at_the_request_deadline(
    mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PCD_REQUEST_DEADLINE", "1.5")
    with DripServer(mode) as server:
        config = kubeconfig_for(server.url, tmp_path / "config")
        with KubeClient(resolve_kube_connection(str(config))) as client:
            started = time.monotonic()
            with pytest.raises(KubeUnreachable) as info:
                client.get_pod("prod", "etl-x7k2p")
            took = time.monotonic() - started
    assert 1.4 <= took < 2.5, took
    assert "did not answer GET /api/v1/namespaces/prod/pods/etl-x7k2p within the request deadline" in str(
        info.value
    )


def test_the_command_deadline_bounds_requests_of_every_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a request deadline far away, and a command deadline near
    monkeypatch.setenv("PCD_REQUEST_DEADLINE", "60")
    errors: list[BaseException] = []
    with DripServer("body") as server:
        deadline.set_command(1.5)
        try:

            def ask() -> None:
                with PrefectApi(Connection(server.url + "/api")) as api:
                    try:
                        api.cancelling_runs()
                    except ApiUnreachable as exc:
                        errors.append(exc)

            # WHEN requests are sent from worker threads (a scan's locating and sampling)
            started = time.monotonic()
            workers = [threading.Thread(target=ask) for _ in range(3)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(10)
            took = time.monotonic() - started
        finally:
            deadline.set_command(None)
    # THEN each ends at the command's deadline, and says so
    assert len(errors) == 3 and took < 2.5, (errors, took)
    assert all("within the command's deadline (1.5 s, --deadline or PCD_DEADLINE)" in str(e) for e in errors)


def test_retries_stop_when_the_deadline_leaves_no_time_for_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a busy server asking for 10 s before each retry, and a 1 s request deadline
    monkeypatch.setenv("PCD_REQUEST_DEADLINE", "1")

    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "10"}, text="busy")

    api = PrefectApi(Connection("http://prefect.test/api"), transport=httpx.MockTransport(busy))
    started = time.monotonic()
    # WHEN a request is refused; THEN the refusal stands at once: no 10 s sleep past the deadline
    with pytest.raises(ApiRefused, match="503"):
        api.cancelling_runs()
    assert time.monotonic() - started < 1.0
    assert api.requests == 1


@pytest.mark.parametrize("mode", DRIPS)
def test_scan_against_a_dripping_api_stops_at_its_deadline_with_one_line_and_exit_3(
    mode: str, tmp_path: Path
) -> None:
    with DripServer(mode) as server:
        env = clean_environ(PREFECT_API_URL=server.url + "/api", PREFECT_HOME=str(tmp_path))
        started = time.monotonic()
        done = run_cli("scan", "--deadline", "4", env=env, timeout=60)
        took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert took < 4 + 2.5, took  # the interpreter's start-up, then 4 s
    first, *rest = [line for line in done.stderr.splitlines() if line.strip()]
    assert first.startswith("error: ") and "deadline (4 s, --deadline or PCD_DEADLINE)" in first, first
    assert all(line.startswith("hint: ") for line in rest), done.stderr
    assert "Traceback" not in done.stderr


def test_scan_names_the_request_deadline_when_that_one_passes(tmp_path: Path) -> None:
    with DripServer("body") as server:
        env = clean_environ(
            PREFECT_API_URL=server.url + "/api", PREFECT_HOME=str(tmp_path), PCD_REQUEST_DEADLINE="2"
        )
        started = time.monotonic()
        done = run_cli("scan", env=env, timeout=60)
        took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert took < 2 + 2.5, took
    assert "within the request deadline (2 s, PCD_REQUEST_DEADLINE)" in done.stderr.splitlines()[0]


def test_inspect_pod_against_a_dripping_kubernetes_api_stops_at_its_deadline(tmp_path: Path) -> None:
    with DripServer("headers") as server:
        config = kubeconfig_for(server.url, tmp_path / "config")
        env = clean_environ(PREFECT_HOME=str(tmp_path), HOME=str(tmp_path))
        started = time.monotonic()
        command = ("inspect", "--pod", "prod/etl", "--kubeconfig", str(config), "--deadline", "3")
        done = run_cli(*command, env=env)
        took = time.monotonic() - started
    assert took < 3 + 2.5, took
    assert done.returncode in (2, 3), done.stderr  # the Kubernetes API's (2) or the watchdog's (3)
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: ") and "deadline (3 s, --deadline or PCD_DEADLINE)" in first, first
    assert "Traceback" not in done.stderr


def test_a_scans_kubernetes_run_is_not_attachable_when_the_api_drips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_cancel_doctor.core.options import Options
    from prefect_cancel_doctor.kinds import parse_infrastructure_pid
    from prefect_cancel_doctor.kinds.base import Here
    from prefect_cancel_doctor.kinds.registry import kind_of

    monkeypatch.setenv("PCD_REQUEST_DEADLINE", "1")
    with DripServer("body") as server:
        here = Here({}, Options(kubeconfig=str(kubeconfig_for(server.url, tmp_path / "config"))))
        infra = parse_infrastructure_pid("prod:etl-x7k2p")
        kind = kind_of(infra.kind)
        kind.prepare([], here)  # the scan's one session, made before its runs are located
        started = time.monotonic()
        location = kind.locate(SimpleNamespace(id="r1"), infra, here)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.5
    assert location.unreachable is not None and "request deadline (1 s" in location.unreachable


def test_the_watchdog_stops_a_main_thread_that_waits_on_anything() -> None:
    # GIVEN a command stuck in a lock wait, where no request deadline reaches
    before = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(deadline.CommandDeadlineInterrupt), deadline.watchdog(0.5):
        threading.Event().wait(30)
    # THEN it is stopped just after its deadline, and leaves nothing of its own behind
    assert time.monotonic() - started < 0.5 + deadline.WATCHDOG_GRACE + 0.5
    assert signal.getsignal(signal.SIGALRM) == before
    assert deadline.remaining() is None


def test_a_command_done_in_time_is_not_stopped() -> None:
    with deadline.watchdog(0.3):
        pass
    time.sleep(1.0)  # no late alarm


def test_a_bad_deadline_setting_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_cancel_doctor.errors import ConfigurationError

    monkeypatch.setenv("PCD_REQUEST_DEADLINE", "soon")
    with pytest.raises(ConfigurationError, match="PCD_REQUEST_DEADLINE"), deadline.request():
        pass
