"""The Docker API client's failure paths (httpx.MockTransport) and its pure parts.

Everything that works is tested against the real engine in test_real_engine.py;
here only what a real engine here cannot be made to do: refuse the socket,
answer 500, lose a container mid-way.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from prefect_cancel_doctor.clients.docker_api import (
    ContainerNotFound,
    DockerApiError,
    DockerClient,
    DockerConfigError,
    DockerEndpoint,
    DockerPermissionDenied,
    DockerUnreachable,
    container_details,
    container_info,
    demux_logs,
    parse_event,
    parse_stats,
    parse_top,
    recorded_remote_engine,
    resolve_endpoint,
)
from prefect_cancel_doctor.kinds import CONTAINER_NOT_FOUND, parse_infrastructure_pid
from prefect_cancel_doctor.kinds.docker.locate import choose_attach_mode, locate_container
from prefect_cancel_doctor.kinds.docker.sidecar import PYSPY_PATH, sidecar_config
from prefect_cancel_doctor.model import ContainerEvent
from prefect_cancel_doctor.proc.roles import argv_role, assign_roles
from prefect_cancel_doctor.sample.namespace import parse_script_output

CONTAINER = "3f1c" + "a" * 60
RUN_ID = "6b2c43a4-7c61-4f5e-9d3a-0d8f6f4b1a11"
SOCKET = DockerEndpoint(
    url="unix:///var/run/docker.sock", base_url="http://docker", socket_path="/var/run/docker.sock"
)


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> DockerClient:
    return DockerClient(SOCKET, transport=httpx.MockTransport(handler))


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def _permission_denied() -> httpx.ConnectError:
    # What httpx raises over a unix socket this user may not open.
    try:
        raise PermissionError(13, "Permission denied")
    except PermissionError as cause:
        try:
            raise httpx.ConnectError("[Errno 13] Permission denied") from cause
        except httpx.ConnectError as exc:
            return exc


# -- faults ----------------------------------------------------------------------------


def test_socket_permission_denied_says_what_to_do() -> None:
    # GIVEN a socket that refuses this user
    client = _client(_raise(_permission_denied()))
    # WHEN the engine is asked anything
    with pytest.raises(DockerPermissionDenied) as caught:
        client.inspect(CONTAINER)
    # THEN the error names the socket and the hint the fix
    assert "/var/run/docker.sock" in str(caught.value)
    assert caught.value.hint is not None and "docker` group" in caught.value.hint


def test_missing_socket_is_unreachable() -> None:
    client = _client(_raise(httpx.ConnectError("[Errno 2] No such file or directory")))
    with pytest.raises(DockerUnreachable) as caught:
        client.ping()
    assert "no Docker engine socket" in str(caught.value)
    assert caught.value.hint is not None and "DOCKER_HOST" in caught.value.hint


def test_engine_500_carries_status_and_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"message": "containerd: connection refused"})

    with pytest.raises(DockerApiError) as caught:
        _client(handler).top(CONTAINER)
    assert caught.value.status_code == 500
    assert "containerd: connection refused" in str(caught.value)


def test_container_404_is_container_not_found() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": f"No such container: {CONTAINER}"})

    with pytest.raises(ContainerNotFound):
        _client(handler).inspect(CONTAINER)
    assert _client(handler).remove(CONTAINER) is False


def test_locate_removed_container_reports_the_fact() -> None:
    # GIVEN an engine that no longer knows the run's container, nor any other of the run
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/containers/json":
            # First by label, then (no label matched) the running containers' environments.
            if "filters" in request.url.params:
                filters = json.loads(request.url.params["filters"])
                assert filters == {"label": [f"io.prefect.flow-run-id={RUN_ID}"]}
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"message": "No such container"})

    # WHEN the run is located
    location = locate_container(
        RUN_ID, parse_infrastructure_pid(f"http+docker://localhost:{CONTAINER}"), client=_client(handler)
    )
    # THEN it is a fact for the rules, not an attach failure
    assert location.unreachable is None
    assert location.pids == ()
    assert location.container is not None and location.container.status == CONTAINER_NOT_FOUND
    assert any("no longer exists" in note for note in location.notes)
    assert seen[0] == f"/containers/{CONTAINER}/json"


def test_locate_with_socket_denied_is_unreachable_for_that_run_only() -> None:
    location = locate_container(
        RUN_ID,
        parse_infrastructure_pid(f"http+docker://localhost:{CONTAINER}"),
        client=_client(_raise(_permission_denied())),
    )
    assert location.unreachable is not None
    assert "permission denied" in location.unreachable and "docker` group" in location.unreachable


def test_locate_with_engine_error_is_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="boom")

    location = locate_container(
        RUN_ID, parse_infrastructure_pid(f"http+docker://localhost:{CONTAINER}"), client=_client(handler)
    )
    assert location.unreachable is not None and "500" in location.unreachable


def test_container_of_another_run_is_not_sampled() -> None:
    other = "11111111-2222-3333-4444-555555555555"
    document = _inspect(env=[f"PREFECT__FLOW_RUN_ID={other}"], labels={"io.prefect.flow-run-id": other})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/containers/json":
            return httpx.Response(200, json=[])
        return httpx.Response(200, json=document)

    location = locate_container(
        RUN_ID, parse_infrastructure_pid(f"http+docker://localhost:{CONTAINER}"), client=_client(handler)
    )
    assert location.pids == ()
    assert location.container is not None and location.container.status == CONTAINER_NOT_FOUND
    assert any(f"belongs to flow run {other}" in note for note in location.notes)


def test_ssh_docker_host_is_refused_with_a_way_around() -> None:
    with pytest.raises(DockerConfigError) as caught:
        resolve_endpoint(environ={"DOCKER_HOST": "ssh://me@build-box"})
    assert caught.value.hint is not None
    assert "DOCKER_HOST=tcp://" in caught.value.hint and "ssh -NL" in caught.value.hint
    location = locate_container(
        RUN_ID,
        parse_infrastructure_pid(f"http+docker://localhost:{CONTAINER}"),
        environ={"DOCKER_HOST": "ssh://me@build-box"},
    )
    assert location.unreachable is not None and "ssh://" in location.unreachable


# -- engine events ----------------------------------------------------------------------

SINCE = datetime(2026, 1, 2, 3, 4, 5, 250_000, tzinfo=timezone.utc)
UNTIL = datetime(2026, 1, 2, 3, 14, 5, tzinfo=timezone.utc)


def _event(action: str, nanos: int, **attributes: str) -> bytes:
    document = {
        "status": action,
        "id": CONTAINER,
        "Type": "container",
        "Action": action,
        "Actor": {"ID": CONTAINER, "Attributes": {"name": "tidy-otter", **attributes}},
        "scope": "local",
        "time": nanos // 1_000_000_000,
        "timeNano": nanos,
    }
    return json.dumps(document).encode() + b"\n"


T = 1_767_323_100_000_000_000  # 2026-01-02T03:05:00Z


def _events_answer(body: bytes | Iterator[bytes]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/events"
        return httpx.Response(200, content=body)

    return handler


def test_events_asks_for_the_container_between_two_times_and_keeps_what_was_done_to_it() -> None:
    # GIVEN an engine that recorded a cancel's signals, among events of no interest
    seen: list[httpx.Request] = []
    body = b"".join(
        [
            _event("start", T - 10**9),
            _event("kill", T + 1_123_456_789, signal="15"),
            _event("exec_die", T + 2 * 10**9, execID="e1", exitCode="0"),
            b"\n",
            _event("kill", T + 3 * 10**9, signal="SIGKILL"),
            _event("die", T + 3_010_000_000, exitCode="137"),
            _event("stop", T + 3_020_000_000),
            _event("kill", T + 4 * 10**9, signal="15").replace(b'"Type": "container"', b'"Type": "network"'),
            _event("kill", T + 5 * 10**9, signal="15").replace(CONTAINER.encode(), b"9" * 64),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _events_answer(body)(request)

    # WHEN its events since the cancel are read
    events = _client(handler).events(CONTAINER, SINCE, UNTIL)
    # THEN one bounded request for this container's events
    (request,) = seen
    assert request.url.params["since"] == "1767323045.250000"
    assert request.url.params["until"] == "1767323645.000000"
    assert json.loads(request.url.params["filters"]) == {"container": [CONTAINER], "type": ["container"]}
    # AND only what was done to it, oldest first, the signal as the engine wrote it
    assert events == (
        ContainerEvent("2026-01-02T03:05:01.123456Z", "kill", signal="15"),
        ContainerEvent("2026-01-02T03:05:03.000000Z", "kill", signal="SIGKILL"),
        ContainerEvent("2026-01-02T03:05:03.010000Z", "die", exit_code=137),
        ContainerEvent("2026-01-02T03:05:03.020000Z", "stop"),
    )


def test_events_until_defaults_to_now() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"")

    before = datetime.now(timezone.utc).timestamp()
    assert _client(handler).events(CONTAINER, SINCE) == ()
    until = float(seen[0].url.params["until"])
    assert before - 1 <= until <= datetime.now(timezone.utc).timestamp() + 1


def test_events_engine_500_is_a_docker_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"message": "events: log not available"})

    with pytest.raises(DockerApiError) as caught:
        _client(handler).events(CONTAINER, SINCE, UNTIL)
    assert caught.value.status_code == 500
    assert "events: log not available" in str(caught.value)


def test_events_malformed_line_is_a_docker_api_error() -> None:
    body = _event("kill", T, signal="15") + b'{"Action": "die", \x1b[31m\n'
    with pytest.raises(DockerApiError) as caught:
        _client(_events_answer(body)).events(CONTAINER, SINCE, UNTIL)
    assert "not JSON" in str(caught.value) and "\x1b" not in str(caught.value)


def test_events_stop_at_500_events_and_at_1_mb() -> None:
    many = b"".join(_event("kill", T + i, signal="15") for i in range(600))
    assert len(_client(_events_answer(many)).events(CONTAINER, SINCE, UNTIL)) == 500

    def endless() -> Iterator[bytes]:
        yield _event("die", T, exitCode="143")
        while True:  # one line that never ends: reading must stop at 1 MB
            yield b"x" * 65_536

    assert _client(_events_answer(endless())).events(CONTAINER, SINCE, UNTIL) == (
        ContainerEvent("2026-01-02T03:05:00.000000Z", "die", exit_code=143),
    )


def test_parse_event_ignores_other_actions_and_reads_old_engines() -> None:
    assert parse_event({"Action": "start", "Type": "container", "time": 1}) is None
    assert parse_event({"Action": "kill", "Type": "container"}) is None  # no time
    assert parse_event(["kill"]) is None
    old = {"status": "oom", "id": CONTAINER, "time": 1_767_323_100}  # API < 1.22: no Type, Action, Actor
    assert parse_event(old, CONTAINER[:12]) == ContainerEvent("2026-01-02T03:05:00.000000Z", "oom")


def _exited_engine(
    events: Callable[[httpx.Request], httpx.Response],
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/containers/{CONTAINER}/json":
            return httpx.Response(200, json=_inspect())
        if request.url.path == "/events":
            return events(request)
        raise AssertionError(f"unexpected request {request.url}")

    return handler


def test_locate_reads_events_only_when_given_the_time_of_the_cancel() -> None:
    ref = parse_infrastructure_pid(f"http+docker://localhost:{CONTAINER}")
    client = _client(_exited_engine(_events_answer(_event("die", T, exitCode="137"))))
    without = locate_container(RUN_ID, ref, client=client)
    assert without.container is not None and without.container.events is None
    located = locate_container(RUN_ID, ref, client=client, since=SINCE)
    assert located.container is not None
    assert located.container.events == (ContainerEvent("2026-01-02T03:05:00.000000Z", "die", exit_code=137),)
    assert located.notes == without.notes


def test_locate_with_unreadable_events_notes_it_and_still_finds_the_container() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"message": "boom"})

    location = locate_container(
        RUN_ID,
        parse_infrastructure_pid(f"http+docker://localhost:{CONTAINER}"),
        client=_client(_exited_engine(broken)),
        since=SINCE,
    )
    assert location.unreachable is None
    assert location.container is not None and location.container.status == "exited"
    assert location.container.events is None
    assert any(
        "events for container 3f1caaaaaaaa could not be read" in n and "boom" in n for n in location.notes
    )


# -- endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("docker_host", "base_url", "socket"),
    [
        (None, "http://docker", "/var/run/docker.sock"),
        ("unix:///run/user/1000/docker.sock", "http://docker", "/run/user/1000/docker.sock"),
        ("tcp://10.0.0.5:2375", "http://10.0.0.5:2375", None),
    ],
)
def test_endpoint_resolution_reads_only_the_configuration(
    docker_host: str | None, base_url: str, socket: str | None
) -> None:
    environ = {"DOCKER_HOST": docker_host} if docker_host else {}
    endpoint = resolve_endpoint(environ=environ)
    assert endpoint.base_url == base_url
    assert endpoint.socket_path == socket


@pytest.mark.parametrize(
    ("docker_host", "infra_url", "elsewhere"),
    [
        (None, None, None),
        (None, "http+docker://localhost", None),
        ("unix:///run/user/1000/docker.sock", "http+docker://localhost", None),
        (None, "http://127.0.0.1:2375", None),
        ("tcp://10.0.0.7:2375", "http://10.0.0.7:2375", None),
        (None, "http://10.0.0.7:2375", "http://10.0.0.7:2375"),
        ("tcp://10.0.0.5:2375", "http://10.0.0.7:2375", "http://10.0.0.7:2375"),
    ],
)
def test_a_runs_recorded_engine_is_reported_never_dialled(
    docker_host: str | None, infra_url: str | None, elsewhere: str | None
) -> None:
    environ = {"DOCKER_HOST": docker_host} if docker_host else {}
    assert recorded_remote_engine(infra_url, resolve_endpoint(environ=environ)) == elsewhere


def test_tls_verify_uses_https() -> None:
    endpoint = resolve_endpoint(environ={"DOCKER_HOST": "tcp://10.0.0.5:2376", "DOCKER_TLS_VERIFY": "1"})
    assert endpoint.base_url == "https://10.0.0.5:2376" and endpoint.tls_verify


# -- pure parsing ----------------------------------------------------------------------


def _inspect(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "Id": CONTAINER,
        "Name": "/tidy-otter",
        "Image": "sha256:" + "b" * 64,
        "RestartCount": 2,
        "State": {
            "Status": "exited",
            "Running": False,
            "OOMKilled": True,
            "Pid": 0,
            "ExitCode": 137,
            "Error": "",
            "StartedAt": "2026-01-02T03:04:05Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        },
        "Config": {
            "Image": "prefecthq/prefect:3-latest",
            "Cmd": ["prefect", "flow-run", "execute"],
            "Entrypoint": ["/opt/prefect/entrypoint.sh"],
            "StopSignal": "SIGINT",
            "StopTimeout": 30,
            "Env": [
                f"PREFECT__FLOW_RUN_ID={RUN_ID}",
                "PREFECT_API_KEY=pnu_secret",
                "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule",
            ],
            "Labels": {"io.prefect.flow-run-id": RUN_ID},
        },
        "HostConfig": {"Init": True, "RestartPolicy": {"Name": "on-failure"}},
    }
    document["Config"].update({k.capitalize(): v for k, v in overrides.items()})
    return document


def test_container_info_keeps_the_facts_and_no_secrets() -> None:
    info = container_info(_inspect())
    assert (info.status, info.exit_code, info.oom_killed) == ("exited", 137, True)
    assert info.command == ("prefect", "flow-run", "execute")
    assert info.entrypoint == ("/opt/prefect/entrypoint.sh",)
    assert (info.stop_signal, info.stop_timeout, info.init) == ("SIGINT", 30, True)
    assert (info.restart_count, info.restart_policy) == (2, "on-failure")
    assert info.started_at == "2026-01-02T03:04:05Z" and info.finished_at is None
    assert info.host_pid is None and info.name == "tidy-otter"
    assert info.flow_run_id == RUN_ID
    assert info.settings == {"PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": "reschedule"}
    assert "pnu_secret" not in repr(info)


def test_parse_top_and_stats() -> None:
    rows = parse_top(
        {
            "Titles": ["PID", "PPID", "COMMAND"],
            "Processes": [
                ["100", "90", "sh -c python -m prefect.engine; echo done"],
                ["120", "100", "python -m x"],
            ],
        }
    )
    assert [(r.pid, r.ppid) for r in rows] == [(100, 90), (120, 100)]
    stats = parse_stats(
        {
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000}, "system_cpu_usage": 20_000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000},
            "memory_stats": {"usage": 1_000, "limit": 5_000, "stats": {"inactive_file": 200}},
            "pids_stats": {"current": 9},
        }
    )
    assert (stats.cpu_percent, stats.memory_bytes, stats.memory_limit_bytes, stats.pids) == (
        40.0,
        800,
        5_000,
        9,
    )


def test_demux_logs() -> None:
    def frame(stream: int, data: bytes) -> bytes:
        return struct.pack(">BxxxI", stream, len(data)) + data

    assert demux_logs(frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"more")) == (b"out\nmore", b"err\n")
    assert demux_logs(b"raw tty output") == (b"raw tty output", b"")


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (("/tmp/venv/bin/python3", "-m", "prefect.engine"), "engine"),
        (("python", "/usr/lib/python3/site-packages/prefect/engine.py"), "engine"),
        (("/tmp/venv/bin/python3", "/tmp/venv/bin/prefect", "flow-run", "execute"), "runner"),
        (("sh", "-c", "python -m prefect.engine"), None),
        (("/bin/bash", "-c", "prefect flow-run execute"), None),
        # An init in front of the Runner is the init, never the Runner (it may outlive it and adopt).
        (("tini", "-g", "--", "prefect", "flow-run", "execute"), None),
        (("python", "-c", "import time"), None),
    ],
)
def test_argv_role(argv: tuple[str, ...], role: str | None) -> None:
    assert argv_role(argv) == role


def test_roles_runner_as_pid1() -> None:
    roles, runner = assign_roles(
        [
            (10, 1, ("python", "/venv/bin/prefect", "flow-run", "execute")),
            (20, 10, ("python", "-m", "prefect.engine")),
            (30, 20, ("sleep", "3600")),
            (40, 5, ("sh",)),  # a `docker exec` session: not part of the run
        ],
        10,
    )
    assert runner == 10
    assert roles == [(20, "engine"), (30, "child")]


def test_roles_engine_as_pid1_and_shell_as_pid1() -> None:
    assert assign_roles([(10, 1, ("python", "-m", "prefect.engine"))], 10) == ([(10, "engine")], None)
    roles, runner = assign_roles(
        [
            (10, 1, ("sh", "-c", "python -m prefect.engine; echo done")),
            (20, 10, ("python", "-m", "prefect.engine")),
        ],
        10,
    )
    assert (roles, runner) == ([(10, "pid1"), (20, "engine")], None)


@pytest.mark.parametrize(
    ("requested", "visible", "ptrace", "mode"),
    [
        (None, True, True, "host"),
        ("auto", True, False, "sidecar"),
        ("auto", False, True, "sidecar"),
        ("sidecar", True, True, "sidecar"),
        ("HOST", False, False, "host"),
    ],
)
def test_attach_mode(requested: str | None, visible: bool, ptrace: bool, mode: str) -> None:
    assert choose_attach_mode(requested, host_pid_visible=visible, can_ptrace=ptrace) == mode


def test_attach_mode_rejects_nonsense() -> None:
    with pytest.raises(DockerConfigError):
        choose_attach_mode("nsenter", host_pid_visible=True, can_ptrace=True)


def test_sidecar_config_shares_the_pid_namespace_and_reuses_the_image() -> None:
    target = _inspect()
    config = sidecar_config(
        container_details(target),
        [PYSPY_PATH],
        ["dump", "--pid", "7", "--json"],
        pyspy_bind="/venv/bin/py-spy",
    )
    host = config["HostConfig"]
    assert config["Image"] == target["Image"]  # by id: nothing to pull
    assert host["PidMode"] == f"container:{CONTAINER}"
    assert host["CapAdd"] == ["SYS_PTRACE"]
    assert host["AutoRemove"] is False
    assert host["VolumesFrom"] == [f"{CONTAINER}:ro"]
    assert host["Binds"] == [f"/venv/bin/py-spy:{PYSPY_PATH}:ro"]
    assert config["NetworkDisabled"] is True and config["User"] == "0:0"
    assert sidecar_config(container_details(target), ["x"], [], pyspy_bind=None)["HostConfig"]["Binds"] == []


def test_parse_script_output_keeps_files_byte_exact() -> None:
    output = (
        b"\n@@PCD file 0 7/cmdline\npython\0-m\0prefect.engine\0"
        b"\n@@PCD file 1 7/task/7/wchan\nhrtimer_nanosleep"
        b"\n@@PCD file 1 7/status\nName:\tpython\nNSpid:\t7\n"
        b"\n@@PCD dump 1 7 full 0\n[]\n"
        b"\n@@PCD end\n"
    )
    parsed = parse_script_output(output)
    assert parsed.finished
    assert parsed.files[0]["7/cmdline"] == b"python\0-m\0prefect.engine\0"
    assert parsed.files[1]["7/task/7/wchan"] == b"hrtimer_nanosleep"
    assert parsed.files[1]["7/status"] == b"Name:\tpython\nNSpid:\t7\n"
    assert parsed.dumps[(1, 7)] == [("full", 0, "[]\n")]
