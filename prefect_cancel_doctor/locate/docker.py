"""Docker containers: a small Docker Engine API client over httpx, and `locate_container`.

prefect-docker writes `infrastructure_pid` as ``"<docker base url>:<container id>"``;
with the Docker SDK's default socket the base URL reads ``http+docker://localhost``
(the socket path is not in it). The container carries the run's id twice: in its
environment (``PREFECT__FLOW_RUN_ID``) and as the label ``io.prefect.flow-run-id``.
Nothing is sampled before one of them matches the run.

Inside, the job's default command ``prefect flow-run execute`` is PID 1: that is
the Runner, and the flow engine (``python -m prefect.engine``) is its child. A
custom ``command`` may make the engine PID 1 (no Runner), or a shell PID 1 that
forwards no signal. `locate_container` maps those roles onto host PIDs when the
container's processes are visible in our /proc and ptrace is allowed ("host"
attach mode); otherwise it lists them through the engine (``docker top``) and
leaves sampling to a sidecar sharing the container's PID namespace
(`prefect_cancel_doctor.sample.sidecar`).

Only the Engine API is used (no Docker SDK, no CLI): ``DOCKER_HOST`` is honoured
(``unix://`` and ``tcp://``, TLS through ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``);
``ssh://`` is refused with a way around it.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import ssl
import struct
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from prefect_cancel_doctor._http import httpx
from prefect_cancel_doctor.errors import DoctorError
from prefect_cancel_doctor.locate import (
    CONTAINER_NOT_FOUND,
    ContainerInfo,
    ContainerProcess,
    ContainerStats,
    InfraRef,
    Location,
)
from prefect_cancel_doctor.model import ProcSnapshot
from prefect_cancel_doctor.sample import procfs

#: Where the Docker engine listens when DOCKER_HOST is not set.
DEFAULT_SOCKET = "/var/run/docker.sock"
#: The label prefect-docker 0.7.4 puts on a run's container (from `prefect.io/flow-run-id`).
FLOW_RUN_LABEL = "io.prefect.flow-run-id"
#: The environment variable every process of a run carries.
FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"
#: Chooses how a container's processes are sampled: host, sidecar or auto (the default).
ATTACH_ENV = "PCD_DOCKER_ATTACH"
ATTACH_MODES = ("auto", "host", "sidecar")

# Prefect settings in a container's environment that change what a cancel does.
# Only these names are kept: a container's environment may hold secrets.
_CANCEL_SETTINGS = (
    "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR",
    "PREFECT_RUNNER_CRASH_ON_CANCELLATION_FAILURE",
)
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"})
_CAP_SYS_PTRACE = 19
_NEVER = "0001-01-01T00:00:00Z"
# Containers inspected one by one when no label names the run (an env-only match).
_ENV_SCAN_LIMIT = 100


# -- errors ------------------------------------------------------------------------


class DockerError(DoctorError):
    """The Docker engine could not be used; the message says what failed, `hint` what to do."""


class DockerConfigError(DockerError):
    """DOCKER_HOST (or the run's recorded engine URL) names something this client cannot use."""


class DockerUnreachable(DockerError):
    """No Docker engine answers at the configured address."""


class DockerPermissionDenied(DockerError):
    """The engine's socket exists but this user may not open it."""


class ContainerNotFound(DockerError):
    """The engine answered 404 for a container: it does not exist (any more)."""


class DockerApiError(DockerError):
    """The engine answered with an error status."""

    def __init__(self, message: str, status_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status_code = status_code


# -- where the engine is -------------------------------------------------------------


@dataclass(frozen=True)
class DockerEndpoint:
    """How to reach a Docker engine."""

    #: As configured (``unix:///var/run/docker.sock``, ``tcp://10.0.0.5:2375``).
    url: str
    #: The base URL httpx talks to (``http://docker`` over a unix socket).
    base_url: str
    #: The unix socket, or None for TCP.
    socket_path: str | None = None
    #: TLS settings for ``tcp://`` with DOCKER_TLS_VERIFY: (ca, cert, key) file paths.
    tls_files: tuple[str, str, str] | None = None
    tls_verify: bool = True


def resolve_endpoint(
    docker_host: str | None = None,
    *,
    infra_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> DockerEndpoint:
    """The engine to talk to: `docker_host`, else $DOCKER_HOST, else the run's recorded URL, else the socket.

    `infra_url` is the base URL prefect-docker recorded in `infrastructure_pid`
    (``http+docker://localhost`` means "the default socket, as the worker saw it").
    """
    env = os.environ if environ is None else environ
    configured = (
        docker_host or env.get("DOCKER_HOST") or _from_infra_url(infra_url) or f"unix://{DEFAULT_SOCKET}"
    )
    return _parse_host(configured, env)


def _from_infra_url(url: str | None) -> str | None:
    if not url:
        return None
    scheme = urlsplit(url).scheme
    if scheme in ("http+docker", "http+unix"):
        return None  # the SDK hides the socket path: use the default socket
    if scheme in ("http", "https"):
        return "tcp://" + url.split("://", 1)[1].rstrip("/")
    return url


def _parse_host(url: str, env: Mapping[str, str]) -> DockerEndpoint:
    if url.startswith("/"):
        url = "unix://" + url
    scheme, _, rest = url.partition("://")
    if scheme == "unix":
        path = "/" + rest.lstrip("/")
        return DockerEndpoint(url=f"unix://{path}", base_url="http://docker", socket_path=path)
    if scheme in ("tcp", "http", "https"):
        hostport = rest.strip("/")
        tls = scheme == "https" or bool(env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_TLS"))
        if not tls:
            return DockerEndpoint(url=url, base_url=f"http://{hostport}")
        cert_dir = env.get("DOCKER_CERT_PATH") or str(Path.home() / ".docker")
        files = (f"{cert_dir}/ca.pem", f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem")
        return DockerEndpoint(
            url=url,
            base_url=f"https://{hostport}",
            tls_files=files if all(Path(f).is_file() for f in files) else None,
            tls_verify=bool(env.get("DOCKER_TLS_VERIFY")),
        )
    if scheme == "ssh":
        raise DockerConfigError(
            f"DOCKER_HOST={url} uses ssh://, which this client does not speak",
            hint=(
                "open an SSH tunnel to the engine's socket and point DOCKER_HOST at it, e.g. "
                "`ssh -NL 127.0.0.1:2375:/var/run/docker.sock user@host` then "
                "DOCKER_HOST=tcp://127.0.0.1:2375; or run prefect-cancel-doctor on the Docker host"
            ),
        )
    raise DockerConfigError(
        f"unsupported Docker engine address {url!r}",
        hint="use unix:///path/to/docker.sock or tcp://host:port in DOCKER_HOST",
    )


# -- the client ------------------------------------------------------------------------


@dataclass(frozen=True)
class TopProcess:
    """One row of `docker top <id> -eo pid,ppid,args` (PIDs in the engine's namespace)."""

    pid: int
    ppid: int
    args: str


class DockerClient:
    """The handful of Docker Engine API calls the doctor, the sidecar and the test harness need.

    Pass `transport` (e.g. `httpx.MockTransport`) to test without an engine.
    Every failure is a `DockerError` whose hint says what to do.
    """

    def __init__(
        self,
        endpoint: DockerEndpoint | str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        if endpoint is None or isinstance(endpoint, str):
            endpoint = resolve_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout = timeout
        if transport is None:
            transport = _transport(endpoint)
        self._http = httpx.Client(transport=transport, base_url=endpoint.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> DockerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- low level --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | Sequence[tuple[str, str | int]] | None = None,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        container: str | None = None,
    ) -> httpx.Response:
        """One API call; errors become DockerError (404 on a `container` path: ContainerNotFound)."""
        try:
            response = self._http.request(
                method,
                path,
                params=params if isinstance(params, Mapping) else list(params or ()),
                json=body,
                content=content,
                headers=dict(headers or {}),
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.TimeoutException as exc:
            raise DockerUnreachable(
                f"the Docker engine at {self.endpoint.url} did not answer {method} {path} in time ({exc})",
                hint="check that the engine is healthy (`docker info`)",
            ) from exc
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        if response.status_code < 400:
            return response
        message = _error_message(response)
        if response.status_code == 404 and container is not None:
            raise ContainerNotFound(f"no container {container} on the Docker engine at {self.endpoint.url}")
        raise DockerApiError(
            f"Docker engine error {response.status_code} on {method} {path}: {message}",
            response.status_code,
            hint="see the engine's log (`journalctl -u docker`) for the cause",
        )

    def _connection_error(self, exc: httpx.TransportError) -> DockerError:
        where = self.endpoint.url
        if _caused_by(exc, PermissionError) or "Permission denied" in str(exc):
            return DockerPermissionDenied(
                f"permission denied on the Docker engine socket {self.endpoint.socket_path or where}",
                hint=(
                    "run as root, add this user to the `docker` group (then log in again), "
                    "or set DOCKER_HOST to an engine address you may use"
                ),
            )
        if _caused_by(exc, FileNotFoundError) or "No such file" in str(exc):
            return DockerUnreachable(
                f"no Docker engine socket at {self.endpoint.socket_path or where}",
                hint=(
                    "is Docker running on this host? If the engine listens elsewhere, set "
                    "DOCKER_HOST (unix:///path/to/docker.sock or tcp://host:port)"
                ),
            )
        return DockerUnreachable(
            f"cannot connect to the Docker engine at {where}: {exc}",
            hint="start the Docker engine, or set DOCKER_HOST to where it listens",
        )

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request` and decode the JSON body."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise DockerApiError(
                f"the Docker engine returned invalid JSON for {method} {path}", response.status_code
            ) from exc

    # -- engine ----------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the engine answers (`GET /_ping`)."""
        self.request("GET", "/_ping")

    def version(self) -> dict[str, Any]:
        """`GET /version`: the engine's version and API version."""
        document: dict[str, Any] = self.json("GET", "/version")
        return document

    # -- containers ------------------------------------------------------------------

    def inspect_raw(self, container_id: str) -> dict[str, Any]:
        """`GET /containers/{id}/json` as returned."""
        document: dict[str, Any] = self.json(
            "GET", f"/containers/{_seg(container_id)}/json", container=container_id
        )
        return document

    def inspect(self, container_id: str) -> ContainerInfo:
        """The container's state and configuration (processes and stats not filled in)."""
        return container_info(self.inspect_raw(container_id))

    def top(self, container_id: str, ps_args: str = "-eo pid,ppid,args") -> list[TopProcess]:
        """Its processes, as the engine's `ps` sees them (`GET /containers/{id}/top`)."""
        document = self.json(
            "GET",
            f"/containers/{_seg(container_id)}/top",
            params={"ps_args": ps_args},
            container=container_id,
        )
        return parse_top(document)

    def stats(self, container_id: str) -> ContainerStats:
        """One-shot CPU and memory use (`GET /containers/{id}/stats?stream=false`, ~1-2 s)."""
        document = self.json(
            "GET",
            f"/containers/{_seg(container_id)}/stats",
            params={"stream": "false"},
            container=container_id,
            timeout=max(self.timeout, 15.0),
        )
        return parse_stats(document)

    def containers(
        self, *, all: bool = True, filters: Mapping[str, Iterable[str]] | None = None
    ) -> list[dict[str, Any]]:
        """`GET /containers/json` summaries."""
        params: dict[str, str | int] = {"all": int(all)}
        if filters:
            params["filters"] = json.dumps({key: list(values) for key, values in filters.items()})
        found: list[dict[str, Any]] = self.json("GET", "/containers/json", params=params)
        return found

    def containers_for_run(self, run_id: str) -> list[str]:
        """Ids of the containers of a flow run: by label, else by PREFECT__FLOW_RUN_ID (running ones)."""
        labelled = self.containers(filters={"label": [f"{FLOW_RUN_LABEL}={run_id}"]})
        if labelled:
            return [str(c["Id"]) for c in _newest_first(labelled)]
        found = []
        for summary in _newest_first(self.containers(all=False))[:_ENV_SCAN_LIMIT]:
            try:
                raw = self.inspect_raw(str(summary["Id"]))
            except ContainerNotFound:
                continue
            if _env(raw).get(FLOW_RUN_ENV) == run_id:
                found.append(str(summary["Id"]))
        return found

    def logs(self, container_id: str, *, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Everything the container wrote so far, as (stdout, stderr)."""
        response = self.request(
            "GET",
            f"/containers/{_seg(container_id)}/logs",
            params={"stdout": 1, "stderr": 1},
            container=container_id,
            timeout=timeout,
        )
        return demux_logs(response.content)

    def create(self, config: Mapping[str, Any], name: str | None = None) -> str:
        """`POST /containers/create`; returns the new container's id."""
        params = {"name": name} if name else None
        created = self.json("POST", "/containers/create", params=params, body=dict(config))
        return str(created["Id"])

    def start(self, container_id: str) -> None:
        """`POST /containers/{id}/start`."""
        self.request("POST", f"/containers/{_seg(container_id)}/start", container=container_id)

    def wait(self, container_id: str, timeout: float) -> int:
        """Block until the container stops (at most `timeout` s); returns its exit code."""
        document = self.json(
            "POST",
            f"/containers/{_seg(container_id)}/wait",
            params={"condition": "not-running"},
            container=container_id,
            timeout=timeout,
        )
        return int(document.get("StatusCode", -1))

    def stop(
        self, container_id: str, timeout: int | None = None, *, http_timeout: float | None = None
    ) -> None:
        """`docker stop`: StopSignal to PID 1, SIGKILL after `timeout` s (engine default if None)."""
        params = {"t": timeout} if timeout is not None else None
        wait = http_timeout if http_timeout is not None else (timeout or 10) + self.timeout
        self.request(
            "POST",
            f"/containers/{_seg(container_id)}/stop",
            params=params,
            container=container_id,
            timeout=wait,
        )

    def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        """`docker kill --signal`: send one signal to PID 1."""
        self.request(
            "POST",
            f"/containers/{_seg(container_id)}/kill",
            params={"signal": signal},
            container=container_id,
        )

    def remove(self, container_id: str, *, force: bool = True) -> bool:
        """Delete a container (and its anonymous volumes); False if it was already gone."""
        try:
            self.request(
                "DELETE",
                f"/containers/{_seg(container_id)}",
                params={"force": int(force), "v": 1},
                container=container_id,
            )
        except ContainerNotFound:
            return False
        return True

    def put_archive(self, container_id: str, path: str, tarball: bytes) -> None:
        """`PUT /containers/{id}/archive`: extract a tar into a (created or running) container."""
        self.request(
            "PUT",
            f"/containers/{_seg(container_id)}/archive",
            params={"path": path},
            content=tarball,
            headers={"Content-Type": "application/x-tar"},
            container=container_id,
            timeout=max(self.timeout, 60.0),
        )

    def read_file(self, container_id: str, path: str, max_bytes: int = 4 << 20) -> bytes | None:
        """One regular file from a container's filesystem, volumes included (`docker cp`); None if absent."""
        try:
            response = self.request(
                "GET",
                f"/containers/{_seg(container_id)}/archive",
                params={"path": path},
                container=container_id,
            )
        except ContainerNotFound:
            return None  # the engine answers 404 for a missing path too
        if len(response.content) > max_bytes + 4096:
            return None
        with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
            member = next((m for m in archive.getmembers() if m.isfile()), None)
            if member is None or member.size > max_bytes:
                return None
            extracted = archive.extractfile(member)
            return extracted.read() if extracted is not None else None

    # -- images ----------------------------------------------------------------------

    def image_exists(self, reference: str) -> bool:
        """Whether the engine has the image locally."""
        try:
            self.request("GET", f"/images/{_seg(reference)}/json", container=reference)
        except ContainerNotFound:
            return False
        return True

    def import_image(self, tarball: bytes, repository: str, tag: str, changes: Iterable[str] = ()) -> None:
        """`docker import`: an image from a root filesystem tarball, with Dockerfile `changes`."""
        params: list[tuple[str, str | int]] = [("fromSrc", "-"), ("repo", repository), ("tag", tag)]
        params += [("changes", change) for change in changes]
        response = self.request(
            "POST",
            "/images/create",
            params=params,
            content=tarball,
            headers={"Content-Type": "application/x-tar"},
            timeout=max(self.timeout, 120.0),
        )
        for line in response.text.splitlines():
            if '"error"' in line:
                raise DockerApiError(f"docker import failed: {json.loads(line).get('error')}", 500)

    def remove_image(self, reference: str, *, force: bool = True) -> bool:
        """Delete an image; False if it did not exist."""
        try:
            self.request(
                "DELETE", f"/images/{_seg(reference)}", params={"force": int(force)}, container=reference
            )
        except ContainerNotFound:
            return False
        return True


def _transport(endpoint: DockerEndpoint) -> httpx.BaseTransport:
    if endpoint.socket_path is not None:
        return httpx.HTTPTransport(uds=endpoint.socket_path)
    if endpoint.base_url.startswith("https://"):
        context = ssl.create_default_context()
        if endpoint.tls_files is not None:
            ca, cert, key = endpoint.tls_files
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
        if not endpoint.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return httpx.HTTPTransport(verify=context)
    return httpx.HTTPTransport()


def _seg(value: str) -> str:
    return quote(value, safe=":@")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text).strip()
    except ValueError:
        return response.text.strip() or response.reason_phrase


def _newest_first(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(summaries, key=lambda c: int(c.get("Created") or 0), reverse=True)


# -- parsing -------------------------------------------------------------------------


def container_info(raw: Mapping[str, Any]) -> ContainerInfo:
    """A `GET /containers/{id}/json` document as the facts the rules read."""
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    host = raw.get("HostConfig") or {}
    labels = {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}
    env = _env(raw)
    pid = int(state.get("Pid") or 0)
    stop_timeout = config.get("StopTimeout")
    return ContainerInfo(
        id=str(raw.get("Id", "")),
        name=str(raw.get("Name") or "").lstrip("/") or None,
        status=str(state.get("Status") or ("running" if state.get("Running") else "unknown")),
        running=bool(state.get("Running")),
        exit_code=None if state.get("Running") else _int_or_none(state.get("ExitCode")),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or "") or None,
        image=config.get("Image"),
        command=tuple(str(a) for a in config.get("Cmd") or ()),
        entrypoint=_argv(config.get("Entrypoint")),
        stop_signal=config.get("StopSignal") or None,
        stop_timeout=int(stop_timeout) if stop_timeout is not None else None,
        init=bool(host.get("Init")),
        host_pid=pid or None,
        restart_count=int(raw.get("RestartCount") or 0),
        restart_policy=(host.get("RestartPolicy") or {}).get("Name") or None,
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")),
        labels=labels,
        flow_run_id=env.get(FLOW_RUN_ENV) or labels.get(FLOW_RUN_LABEL),
        settings={k: env[k] for k in _CANCEL_SETTINGS if k in env},
    )


def parse_top(document: Mapping[str, Any]) -> list[TopProcess]:
    """Rows of a `/top` answer; needs the pid, ppid and args (or cmd/command) columns."""
    titles = [str(t).upper() for t in document.get("Titles") or ()]
    try:
        pid_col = titles.index("PID")
        ppid_col = titles.index("PPID")
    except ValueError as exc:
        raise DockerApiError(f"docker top returned no PID/PPID columns: {titles}", 500) from exc
    args_col = next((i for i, t in enumerate(titles) if t in ("COMMAND", "CMD", "ARGS")), len(titles) - 1)
    rows = []
    for row in document.get("Processes") or ():
        rows.append(TopProcess(pid=int(row[pid_col]), ppid=int(row[ppid_col]), args=str(row[args_col])))
    return rows


def parse_stats(document: Mapping[str, Any]) -> ContainerStats:
    """CPU % and memory from a `stats?stream=false` answer, computed as `docker stats` does."""
    cpu = document.get("cpu_stats") or {}
    pre = document.get("precpu_stats") or {}
    cpu_percent = None
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
        online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or ()) or 1
        if system_delta > 0 and cpu_delta >= 0:
            cpu_percent = round(cpu_delta / system_delta * online * 100.0, 2)
    except (KeyError, TypeError):
        pass
    memory = document.get("memory_stats") or {}
    usage = memory.get("usage")
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    return ContainerStats(
        cpu_percent=cpu_percent,
        memory_bytes=int(usage - cache) if isinstance(usage, int) and usage >= cache else usage,
        memory_limit_bytes=memory.get("limit"),
        pids=(document.get("pids_stats") or {}).get("current"),
    )


def demux_logs(data: bytes) -> tuple[bytes, bytes]:
    """Split the engine's multiplexed log stream (8-byte frame headers) into stdout and stderr.

    A container with a TTY sends raw bytes instead; they count as stdout.
    """
    out, err = bytearray(), bytearray()
    view = memoryview(data)
    position = 0
    while position + 8 <= len(view):
        stream, size = view[position], struct.unpack(">I", view[position + 4 : position + 8])[0]
        if stream not in (0, 1, 2) or any(view[position + 1 : position + 4]):
            return bytes(data), b""  # not multiplexed (TTY)
        chunk = view[position + 8 : position + 8 + size]
        (err if stream == 2 else out).extend(chunk)
        position += 8 + size
    if position != len(view):
        return bytes(data), b""
    return bytes(out), bytes(err)


def _env(raw: Mapping[str, Any]) -> dict[str, str]:
    env = {}
    for entry in (raw.get("Config") or {}).get("Env") or ():
        key, _, value = str(entry).partition("=")
        env[key] = value
    return env


def _argv(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(a) for a in value)


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


def _time(value: Any) -> str | None:
    return None if not value or value == _NEVER else str(value)


# -- roles -------------------------------------------------------------------------


def argv_role(argv: tuple[str, ...] | list[str]) -> str | None:
    """ "engine" for `python -m prefect.engine`, "runner" for `prefect flow-run execute`, else None.

    A shell whose `-c` script mentions either is neither: it is the shell.
    """
    if not argv or os.path.basename(argv[0]) in _SHELLS:
        return None
    words = list(argv)
    pairs = set(itertools.pairwise(words))
    if ("-m", "prefect.engine") in pairs or any(w.endswith("prefect/engine.py") for w in words):
        return "engine"
    if ("flow-run", "execute") in pairs:
        return "runner"
    return None


def assign_roles(
    processes: Iterable[tuple[int, int, tuple[str, ...]]], pid1: int
) -> tuple[list[tuple[int, str]], int | None]:
    """Roles of a container's processes: (pid, role) for PID 1 and its descendants, and the Runner.

    `processes` are (pid, ppid, argv). PID 1 is "engine" when it is the flow
    engine, the Runner when it is `prefect flow-run execute`, "pid1" otherwise
    (a shell, tini, a custom entrypoint). Below it the first engine is "engine",
    a Runner is the Runner, and everything else is "child". The Runner is not
    in the list (it is returned apart, as for local processes); processes that
    do not descend from PID 1 (`docker exec` sessions) are left out.
    """
    table = {pid: (ppid, argv) for pid, ppid, argv in processes}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    roles: list[tuple[int, str]] = []
    runner: int | None = None
    engine_seen = False
    queue = [pid1] if pid1 in table else []
    while queue:
        pid = queue.pop(0)
        kind = argv_role(table[pid][1])
        if kind == "runner" and runner is None:
            runner = pid
        elif kind == "engine" and not engine_seen:
            engine_seen = True
            roles.append((pid, "engine"))
        else:
            roles.append((pid, "pid1" if pid == pid1 else "child"))
        queue.extend(sorted(children.get(pid, ())))
    return roles, runner


def _split_args(args: str) -> tuple[str, ...]:
    # `docker top` joins arguments with spaces; splitting again is exact for the
    # commands Prefect runs (no spaces inside an argument) and good enough for roles.
    return tuple(args.split())


# -- attach mode -----------------------------------------------------------------------


def choose_attach_mode(requested: str | None, *, host_pid_visible: bool, can_ptrace: bool) -> str:
    """ "host" when the container's processes are in our /proc and ptrace is allowed, else "sidecar".

    `requested` ("host", "sidecar", "auto"/None) comes from PCD_DOCKER_ATTACH or
    a flag and wins over the facts.
    """
    mode = (requested or "auto").strip().lower()
    if mode not in ATTACH_MODES:
        raise DockerConfigError(
            f"unknown Docker attach mode {requested!r}",
            hint=f"set {ATTACH_ENV} to one of: {', '.join(ATTACH_MODES)}",
        )
    if mode != "auto":
        return mode
    return "host" if host_pid_visible and can_ptrace else "sidecar"


def can_ptrace_here(proc_root: str = "/proc") -> bool:
    """Whether this process holds CAP_SYS_PTRACE (root, or a container with --cap-add SYS_PTRACE)."""
    status = Path(proc_root, "self", "status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    except (OSError, ValueError):
        pass
    return False


def host_view(host_pid: int | None, run_id: str, proc_root: str = "/proc") -> ProcSnapshot | None:
    """The container's PID 1 in our /proc, if it is really there: same run id, PID 1 of a namespace.

    Returns None when the engine runs in another PID namespace (remote engine,
    Docker Desktop, rootless) so the host PID means nothing here.
    """
    if not host_pid:
        return None
    snapshot = procfs.read_process(host_pid, proc_root)
    if snapshot is None or snapshot.ns_pid != 1 or snapshot.flow_run_id != run_id:
        return None
    return snapshot


# -- locate ------------------------------------------------------------------------


def locate_container(
    run_id: str,
    ref: InfraRef,
    *,
    client: DockerClient | None = None,
    proc_root: str = "/proc",
    attach: str | None = None,
    with_stats: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Location:
    """Find a run's container and its processes' roles; never samples anything.

    The container must carry the run's id (environment or label) before any of
    its processes is listed. An exited, restarting, paused or removed container
    comes back with `container` set and no PIDs, for the rules to read; an
    engine that cannot be reached gives `unreachable` with what to do.
    `attach` overrides PCD_DOCKER_ATTACH (host, sidecar or auto).
    """
    env = os.environ if environ is None else environ
    short = (ref.container_id or "?")[:12]
    own_client = client is None
    try:
        if client is None:
            client = DockerClient(resolve_endpoint(infra_url=ref.docker_url, environ=env))
        try:
            return _locate(run_id, ref, client, proc_root, attach or env.get(ATTACH_ENV), with_stats)
        finally:
            if own_client:
                client.close()
    except DockerError as exc:
        why = str(exc) + (f"; {exc.hint}" if exc.hint else "")
        return Location("docker", f"Docker container {short}", unreachable=why, container_id=ref.container_id)


def _locate(
    run_id: str,
    ref: InfraRef,
    client: DockerClient,
    proc_root: str,
    attach: str | None,
    with_stats: bool,
) -> Location:
    notes: list[str] = []
    container_id = ref.container_id or ""
    raw: dict[str, Any] | None = None
    if container_id:
        try:
            raw = client.inspect_raw(container_id)
        except ContainerNotFound:
            notes.append(f"container {container_id[:12]} no longer exists on the Docker engine (removed)")
        if raw is not None and container_info(raw).flow_run_id != run_id:
            other = container_info(raw).flow_run_id
            notes.append(
                f"container {container_id[:12]} belongs to "
                + (f"flow run {other}" if other else "no flow run (no PREFECT__FLOW_RUN_ID, no label)")
                + "; not sampled"
            )
            raw = None
    if raw is None:
        # infrastructure_pid may be missing or stale: look for the run's own container.
        candidates = [c for c in client.containers_for_run(run_id) if c != container_id]
        if candidates:
            raw = client.inspect_raw(candidates[0])
            notes.append(f"found container {candidates[0][:12]} by its {FLOW_RUN_LABEL} label / environment")
    if raw is None:
        gone = ContainerInfo(id=container_id, name=None, status=CONTAINER_NOT_FOUND, running=False)
        return Location(
            "docker",
            f"Docker container {container_id[:12] or '?'} (gone)",
            notes=tuple(notes),
            container_id=container_id or None,
            container=gone,
        )
    info = container_info(raw)
    description = f"Docker container {info.name or info.id[:12]} ({info.id[:12]})"
    if info.status != "running":
        notes.append(_not_running_note(info))
        return Location("docker", description, notes=tuple(notes), container_id=info.id, container=info)

    visible = host_view(info.host_pid, run_id, proc_root)
    mode = choose_attach_mode(
        attach, host_pid_visible=visible is not None, can_ptrace=can_ptrace_here(proc_root)
    )
    if mode == "host" and visible is None:
        notes.append(
            f"{ATTACH_ENV}=host, but the container's PID 1 (host PID {info.host_pid}) is not this run's "
            "process in our /proc: the engine runs in another PID namespace; nothing sampled"
        )
        return Location("docker", description, notes=tuple(notes), container_id=info.id, container=info)

    pids: list[tuple[int, str]] = []
    runner_pid: int | None = None
    processes: tuple[ContainerProcess, ...] = ()
    if mode == "host" and visible is not None:
        snapshots = _tree(visible, proc_root)
        pids, runner_pid = assign_roles(((s.pid, s.ppid, s.cmdline) for s in snapshots), visible.pid)
        role_of = dict(pids)
        if runner_pid is not None:
            role_of[runner_pid] = "runner"
        processes = tuple(
            ContainerProcess(
                s.pid, s.ppid, " ".join(s.cmdline) or s.comm, role_of.get(s.pid, "child"), s.ns_pid
            )
            for s in snapshots
            if s.pid in role_of
        )
        pid1_command = visible.cmdline
    else:
        try:
            rows = client.top(info.id)
        except DockerApiError as exc:
            rows = []
            notes.append(f"could not list the container's processes (docker top): {exc}")
        roles, runner = assign_roles(
            ((r.pid, r.ppid, _split_args(r.args)) for r in rows), info.host_pid or -1
        )
        role_of = dict(roles)
        if runner is not None:
            role_of[runner] = "runner"
        processes = tuple(
            ContainerProcess(r.pid, r.ppid, r.args, role_of[r.pid], 1 if r.pid == info.host_pid else None)
            for r in rows
            if r.pid in role_of
        )
        pid1_command = next((_split_args(r.args) for r in rows if r.pid == info.host_pid), ())
        notes.append(
            "the container's processes are not reachable from here (other PID namespace or no ptrace): "
            "they are sampled from a sidecar container sharing its PID namespace"
        )
    if not any(role == "engine" for _, role in pids) and not any(p.role == "engine" for p in processes):
        notes.append("no flow engine process (python -m prefect.engine) runs in the container")
    stats = None
    if with_stats:
        try:
            stats = client.stats(info.id)
        except DockerError as exc:
            notes.append(f"container stats unavailable: {exc}")
    info = dataclasses.replace(info, pid1_command=pid1_command, attach=mode, processes=processes, stats=stats)
    return Location(
        "docker",
        description,
        tuple(pids),
        runner_pid,
        None,
        tuple(notes),
        container_id=info.id,
        container=info,
    )


def _tree(root: ProcSnapshot, proc_root: str) -> list[ProcSnapshot]:
    """PID 1 and every live descendant, breadth first."""
    found = [root]
    queue = list(root.children)
    seen = {root.pid}
    while queue:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        snapshot = procfs.read_process(pid, proc_root)
        if snapshot is None or snapshot.state == "Z":
            continue
        found.append(snapshot)
        queue.extend(snapshot.children)
    return found


def _not_running_note(info: ContainerInfo) -> str:
    short = info.id[:12]
    if info.status == "paused":
        return f"container {short} is paused (its cgroup is frozen): not sampled, ptrace would hang"
    if info.status == "restarting":
        return f"container {short} is restarting (restart count {info.restart_count})"
    facts = [f"container {short} is {info.status}"]
    if info.exit_code is not None and info.status != "created":
        facts.append(f"exit code {info.exit_code}")
    if info.oom_killed:
        facts.append("OOM-killed")
    if info.finished_at:
        facts.append(f"finished at {info.finished_at}")
    return ", ".join(facts)


def iter_run_containers(client: DockerClient, run_ids: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(run id, container id) for every labelled container of the given runs (one API call)."""
    wanted = set(run_ids)
    for summary in client.containers(filters={"label": [FLOW_RUN_LABEL]}):
        run_id = (summary.get("Labels") or {}).get(FLOW_RUN_LABEL)
        if run_id in wanted:
            yield run_id, str(summary["Id"])


__all__ = [
    "ATTACH_ENV",
    "ATTACH_MODES",
    "DEFAULT_SOCKET",
    "FLOW_RUN_ENV",
    "FLOW_RUN_LABEL",
    "ContainerNotFound",
    "DockerApiError",
    "DockerClient",
    "DockerConfigError",
    "DockerEndpoint",
    "DockerError",
    "DockerPermissionDenied",
    "DockerUnreachable",
    "TopProcess",
    "argv_role",
    "assign_roles",
    "can_ptrace_here",
    "choose_attach_mode",
    "container_info",
    "demux_logs",
    "host_view",
    "iter_run_containers",
    "locate_container",
    "parse_stats",
    "parse_top",
    "resolve_endpoint",
]
