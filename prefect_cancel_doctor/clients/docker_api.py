"""The Docker Engine API over httpx: where the engine is, a small client, and its answers as records.

Only the Engine API is used (no Docker SDK, no CLI): ``DOCKER_HOST`` is honoured
(``unix://`` and ``tcp://``, TLS through ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``);
``ssh://`` is refused with a way around it. prefect-docker records the engine's
base URL in `infrastructure_pid`; with the Docker SDK's default socket it reads
``http+docker://localhost`` (the socket path is not in it).

Nothing outside this module reads the engine's JSON: `DockerClient` returns the
model's records (`ContainerInfo`, `ContainerStats`, `ContainerEvent`) or the small frozen records
defined here (`TopProcess`, `ContainerSummary`, `ContainerDetails`,
`ImageSummary`, `EngineVersion`), and the parsers that build them
(`container_info`, `parse_top`, `parse_stats`, `parse_event`, `demux_logs`, ...) live here too.
Locating a run's container is `prefect_cancel_doctor.kinds.docker.locate`; sampling it
from a sidecar is `prefect_cancel_doctor.kinds.docker.sidecar`.
"""

from __future__ import annotations

import io
import json
import os
import ssl
import struct
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from prefect_cancel_doctor.clients._fields import as_labels, as_mapping, as_text, as_texts, as_truncated_int
from prefect_cancel_doctor.clients._http import httpx
from prefect_cancel_doctor.clients._http import transport as bounded_transport
from prefect_cancel_doctor.core.inert import visible, visible_or_none
from prefect_cancel_doctor.core.prefect_names import CANCEL_SETTINGS, FLOW_RUN_ENV
from prefect_cancel_doctor.core.prefect_names import DOCKER_FLOW_RUN_LABEL as FLOW_RUN_LABEL
from prefect_cancel_doctor.core.redact import redact_argv
from prefect_cancel_doctor.errors import DoctorError
from prefect_cancel_doctor.model import ContainerEvent, ContainerInfo, ContainerStats

#: Where the Docker engine listens when DOCKER_HOST is not set.
DEFAULT_SOCKET = "/var/run/docker.sock"
_NEVER = "0001-01-01T00:00:00Z"
# Containers inspected one by one when no label names the run (an env-only match).
_ENV_SCAN_LIMIT = 100
#: The engine's event actions `DockerClient.events` keeps (others: create, start, exec_*, ... ).
EVENT_ACTIONS = frozenset({"kill", "stop", "die", "oom", "restart", "destroy", "pause", "unpause"})
# At most this much of an event stream is read, and this many events kept.
_EVENTS_MAX_BYTES = 1 << 20
_EVENTS_MAX = 500


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
    environ: Mapping[str, str] | None = None,
) -> DockerEndpoint:
    """The engine to talk to: `docker_host`, else $DOCKER_HOST, else the default socket.

    Only the operator's configuration chooses it, never a run's data: an
    `infrastructure_pid` is written by whoever runs a deployment.
    """
    env = os.environ if environ is None else environ
    return _parse_host(docker_host or env.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}", env)


def recorded_remote_engine(infra_url: str | None, configured: DockerEndpoint) -> str | None:
    """The engine a run's `infrastructure_pid` names, when it is another host's (else None).

    prefect-docker records the Docker SDK's base URL: ``http+docker://localhost`` (the
    default socket), a unix socket, or a TCP engine. A loopback or the configured
    engine is this host's; anything else is where the run's container lives.
    """
    if not infra_url:
        return None
    try:
        parts = urlsplit(infra_url)
        host = parts.hostname
    except ValueError:
        return visible(infra_url, 200)
    if parts.scheme in ("http+docker", "http+unix", "unix", "npipe") or host in _LOOPBACK:
        return None
    if configured.base_url.startswith(("http://", "https://")):
        try:
            if urlsplit(configured.base_url).hostname == host:
                return None
        except ValueError:
            pass
    return visible(infra_url, 200)


_LOOPBACK = {"localhost", "127.0.0.1", "::1", None}


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


# -- records -----------------------------------------------------------------------


@dataclass(frozen=True)
class TopProcess:
    """One row of `docker top <id> -eo pid,ppid,args` (PIDs in the engine's namespace)."""

    pid: int
    ppid: int
    args: str


@dataclass(frozen=True)
class ContainerSummary:
    """One container of `GET /containers/json` (`docker ps -a`)."""

    id: str
    labels: dict[str, str] = field(default_factory=dict)
    #: When it was created (Unix time, seconds).
    created: int = 0


@dataclass(frozen=True)
class ContainerDetails:
    """One container as `GET /containers/{id}/json` describes it: the facts, and what a sidecar reuses."""

    #: The facts the rules read (processes and stats not filled in).
    info: ContainerInfo
    #: The image it runs, by id (``sha256:...``): a container started from it pulls nothing.
    image_id: str
    #: Its whole environment. It may hold secrets: never put it in a report.
    env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ImageSummary:
    """One image of `GET /images/json` (`docker images`)."""

    id: str
    repo_tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineVersion:
    """`GET /version`: the engine's version and the newest API version it speaks."""

    version: str
    api_version: str


# -- the client ------------------------------------------------------------------------


class DockerClient:
    """The handful of Docker Engine API calls the doctor, the sidecar and the test harness need.

    Every method answers with records, never the engine's JSON. Pass
    `transport` (e.g. `httpx.MockTransport`) to test without an engine.
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

    def _request(
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
        stream: bool = False,
    ) -> httpx.Response:
        """One API call; errors become DockerError (404 on a `container` path: ContainerNotFound).

        With `stream`, a successful response's body is not read yet: the caller reads
        it (mapping its transport errors with `_read_error`) and closes it.
        """
        try:
            request = self._http.build_request(
                method,
                path,
                params=params if isinstance(params, Mapping) else list(params or ()),
                json=body,
                content=content,
                headers=dict(headers or {}),
                timeout=self.timeout if timeout is None else timeout,
            )
            response = self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise DockerUnreachable(
                f"the Docker engine at {self.endpoint.url} did not answer {method} {path} in time ({exc})",
                hint="check that the engine is healthy (`docker info`)",
            ) from exc
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        if response.status_code < 400:
            return response
        if stream:
            try:
                response.read()
            except httpx.HTTPError:
                pass  # the status says enough
            finally:
                response.close()
        message = _error_message(response)
        if response.status_code == 404 and container is not None:
            raise ContainerNotFound(f"no container {container} on the Docker engine at {self.endpoint.url}")
        raise DockerApiError(
            f"Docker engine error {response.status_code} on {method} {path}: {message}",
            response.status_code,
            hint="see the engine's log (`journalctl -u docker`) for the cause",
        )

    def _read_error(self, exc: httpx.TransportError, what: str) -> DockerError:
        """A transport error while reading a streamed body, in this client's error family."""
        if isinstance(exc, httpx.TimeoutException):
            return DockerUnreachable(
                f"the Docker engine at {self.endpoint.url} did not finish {what} in time ({exc})",
                hint="check that the engine is healthy (`docker info`)",
            )
        return self._connection_error(exc)

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

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`_request` and decode the JSON body."""
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise DockerApiError(
                f"the Docker engine returned invalid JSON for {method} {path}", response.status_code
            ) from exc

    # -- engine ----------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the engine answers (`GET /_ping`)."""
        self._request("GET", "/_ping")

    def version(self) -> EngineVersion:
        """`GET /version`: the engine's version and API version."""
        document = self._json("GET", "/version")
        return EngineVersion(str(document.get("Version") or ""), str(document.get("ApiVersion") or ""))

    # -- containers ------------------------------------------------------------------

    def inspect_raw(self, container_id: str) -> dict[str, Any]:
        """`GET /containers/{id}/json` as returned: for the demo harness and tests only.

        Everything else reads a container through `inspect` or `inspect_details`.
        """
        document: dict[str, Any] = self._json(
            "GET", f"/containers/{_seg(container_id)}/json", container=container_id
        )
        return document

    def inspect(self, container_id: str) -> ContainerInfo:
        """The container's state and configuration (processes and stats not filled in)."""
        return container_info(self.inspect_raw(container_id))

    def inspect_details(self, container_id: str) -> ContainerDetails:
        """`inspect`, with the image id and the environment (which may hold secrets)."""
        return container_details(self.inspect_raw(container_id))

    def top(self, container_id: str, ps_args: str = "-eo pid,ppid,args") -> list[TopProcess]:
        """Its processes, as the engine's `ps` sees them (`GET /containers/{id}/top`)."""
        document = self._json(
            "GET",
            f"/containers/{_seg(container_id)}/top",
            params={"ps_args": ps_args},
            container=container_id,
        )
        return parse_top(document)

    def stats(self, container_id: str) -> ContainerStats:
        """One-shot CPU and memory use (`GET /containers/{id}/stats?stream=false`, ~1-2 s)."""
        document = self._json(
            "GET",
            f"/containers/{_seg(container_id)}/stats",
            params={"stream": "false"},
            container=container_id,
            timeout=max(self.timeout, 15.0),
        )
        return parse_stats(document)

    def containers(
        self, *, all: bool = True, filters: Mapping[str, Iterable[str]] | None = None
    ) -> list[ContainerSummary]:
        """`GET /containers/json`: every container (`all`) or the running ones, matching `filters`."""
        params: dict[str, str | int] = {"all": int(all)}
        if filters:
            params["filters"] = _filters(filters)
        listed = self._json("GET", "/containers/json", params=params)
        return [container_summary(c) for c in listed if isinstance(c, dict) and isinstance(c.get("Id"), str)]

    def containers_for_run(self, run_id: str) -> list[str]:
        """Ids of the containers of a flow run: by label, else by PREFECT__FLOW_RUN_ID (running ones)."""
        labelled = self.containers(filters={"label": [f"{FLOW_RUN_LABEL}={run_id}"]})
        if labelled:
            return [c.id for c in _newest_first(labelled)]
        found = []
        for summary in _newest_first(self.containers(all=False))[:_ENV_SCAN_LIMIT]:
            try:
                details = self.inspect_details(summary.id)
            except ContainerNotFound:
                continue
            if details.env.get(FLOW_RUN_ENV) == run_id:
                found.append(summary.id)
        return found

    def logs(self, container_id: str, *, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Everything the container wrote so far, as (stdout, stderr)."""
        response = self._request(
            "GET",
            f"/containers/{_seg(container_id)}/logs",
            params={"stdout": 1, "stderr": 1},
            container=container_id,
            timeout=timeout,
        )
        return demux_logs(response.content)

    def events(
        self, container_id: str, since: datetime, until: datetime | None = None
    ) -> tuple[ContainerEvent, ...]:
        """What the engine did to a container between `since` and `until` (now): `GET /events`.

        Only the actions of `EVENT_ACTIONS` are kept (`kill` with its signal as the engine
        writes it, "15" on Engine 20.10; `die` with its exit code), oldest first, at most
        500 of them and 1 MB of stream. One request: with `until` past, the engine sends
        what it has and closes the stream; the wait is bounded by the client's timeout
        plus however far `until` lies ahead.

        The engine keeps only its last 256 events (of every container) in memory and none
        across a restart, and compares `since`/`until` with its own clock: on a busy engine
        an empty answer does not prove that nothing was done.
        """
        now = datetime.now(timezone.utc)
        end = now if until is None else _aware(until)
        wait = self.timeout + max(0.0, (end - now).total_seconds())
        deadline = time.monotonic() + wait
        params: dict[str, str | int] = {
            "since": _unix_time(since),
            "until": _unix_time(end),
            "filters": _filters({"container": [container_id], "type": ["container"]}),
        }
        what = f"GET /events for container {container_id[:12]}"
        response = self._request("GET", "/events", params=params, timeout=wait, stream=True)
        found: list[ContainerEvent] = []
        try:
            for line in _stream_lines(response.iter_bytes(), _EVENTS_MAX_BYTES):
                try:
                    document = json.loads(line)
                except ValueError as exc:
                    raise DockerApiError(
                        f"the Docker engine's event stream ({what}) holds a line that is not JSON: "
                        f"{visible(line.decode(errors='replace'), 200)}",
                        500,
                        hint="see the engine's log (`journalctl -u docker`) for the cause",
                    ) from exc
                event = parse_event(document, container_id)
                if event is not None:
                    found.append(event)
                    if len(found) >= _EVENTS_MAX:
                        break
                if time.monotonic() > deadline:
                    raise DockerUnreachable(
                        f"the Docker engine at {self.endpoint.url} did not finish {what} in {wait:.0f} s",
                        hint="check that the engine is healthy (`docker info`) and its clock",
                    )
        except httpx.TransportError as exc:
            raise self._read_error(exc, what) from exc
        except httpx.HTTPError as exc:  # a body that cannot be decoded
            raise DockerApiError(f"the Docker engine's answer to {what} is unreadable: {exc}", 500) from exc
        finally:
            response.close()
        return tuple(found)

    def create(self, config: Mapping[str, Any], name: str | None = None) -> str:
        """`POST /containers/create`; returns the new container's id."""
        params = {"name": name} if name else None
        created = self._json("POST", "/containers/create", params=params, body=dict(config))
        return str(created["Id"])

    def start(self, container_id: str) -> None:
        """`POST /containers/{id}/start`."""
        self._request("POST", f"/containers/{_seg(container_id)}/start", container=container_id)

    def wait(self, container_id: str, timeout: float) -> int:
        """Block until the container stops (at most `timeout` s); returns its exit code."""
        document = self._json(
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
        self._request(
            "POST",
            f"/containers/{_seg(container_id)}/stop",
            params=params,
            container=container_id,
            timeout=wait,
        )

    def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        """`docker kill --signal`: send one signal to PID 1."""
        self._request(
            "POST",
            f"/containers/{_seg(container_id)}/kill",
            params={"signal": signal},
            container=container_id,
        )

    def remove(self, container_id: str, *, force: bool = True) -> bool:
        """Delete a container (and its anonymous volumes); False if it was already gone."""
        try:
            self._request(
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
        self._request(
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
            response = self._request(
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

    def images(self, *, filters: Mapping[str, Iterable[str]] | None = None) -> list[ImageSummary]:
        """`GET /images/json`: the engine's local images matching `filters`."""
        params = {"filters": _filters(filters)} if filters else None
        return [image_summary(i) for i in self._json("GET", "/images/json", params=params)]

    def image_exists(self, reference: str) -> bool:
        """Whether the engine has the image locally."""
        try:
            self._request("GET", f"/images/{_seg(reference)}/json", container=reference)
        except ContainerNotFound:
            return False
        return True

    def import_image(self, tarball: bytes, repository: str, tag: str, changes: Iterable[str] = ()) -> None:
        """`docker import`: an image from a root filesystem tarball, with Dockerfile `changes`."""
        params: list[tuple[str, str | int]] = [("fromSrc", "-"), ("repo", repository), ("tag", tag)]
        params += [("changes", change) for change in changes]
        response = self._request(
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
            self._request(
                "DELETE", f"/images/{_seg(reference)}", params={"force": int(force)}, container=reference
            )
        except ContainerNotFound:
            return False
        return True


def _transport(endpoint: DockerEndpoint) -> httpx.BaseTransport:
    """The engine's transport; every socket operation ends by the command's deadline (`deadline`)."""
    if endpoint.socket_path is not None:
        return bounded_transport(uds=endpoint.socket_path)
    if endpoint.base_url.startswith("https://"):
        context = ssl.create_default_context()
        if endpoint.tls_files is not None:
            ca, cert, key = endpoint.tls_files
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
        if not endpoint.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return bounded_transport(verify=context)
    return bounded_transport()


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


def _filters(filters: Mapping[str, Iterable[str]]) -> str:
    return json.dumps({key: list(values) for key, values in filters.items()})


def _newest_first(summaries: list[ContainerSummary]) -> list[ContainerSummary]:
    return sorted(summaries, key=lambda c: c.created, reverse=True)


# -- parsing -------------------------------------------------------------------------


def container_info(raw: Mapping[str, Any]) -> ContainerInfo:
    """A `GET /containers/{id}/json` document as the facts the rules read.

    Every value a run's configuration can set (names, labels, commands) is made inert
    and its secrets redacted; a value of the wrong type reads as absent.
    """
    state = as_mapping(raw.get("State"))
    config = as_mapping(raw.get("Config"))
    host = as_mapping(raw.get("HostConfig"))
    labels = as_labels(config.get("Labels"))
    env = _env(raw)
    running = bool(state.get("Running"))
    return ContainerInfo(
        id=as_text(raw.get("Id")) or "",
        name=(as_text(raw.get("Name")) or "").lstrip("/") or None,
        status=as_text(state.get("Status")) or ("running" if running else "unknown"),
        running=running,
        exit_code=None if running else as_truncated_int(state.get("ExitCode")),
        oom_killed=bool(state.get("OOMKilled")),
        error=as_text(state.get("Error")),
        image=as_text(config.get("Image")),
        command=redact_argv(_argv(config.get("Cmd"))),
        entrypoint=redact_argv(_argv(config.get("Entrypoint"))),
        stop_signal=as_text(config.get("StopSignal")),
        stop_timeout=as_truncated_int(config.get("StopTimeout")),
        init=bool(host.get("Init")),
        host_pid=as_truncated_int(state.get("Pid")) or None,
        restart_count=as_truncated_int(raw.get("RestartCount")) or 0,
        restart_policy=as_text(as_mapping(host.get("RestartPolicy")).get("Name")),
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")),
        labels=labels,
        flow_run_id=visible_or_none(env.get(FLOW_RUN_ENV) or labels.get(FLOW_RUN_LABEL)),
        settings={k: visible(env[k]) for k in CANCEL_SETTINGS if k in env},
    )


def container_details(raw: Mapping[str, Any]) -> ContainerDetails:
    """A `GET /containers/{id}/json` document: its facts, its image id and its environment."""
    return ContainerDetails(container_info(raw), str(raw.get("Image") or ""), _env(raw))


def container_summary(raw: Mapping[str, Any]) -> ContainerSummary:
    """One entry of a `GET /containers/json` answer."""
    return ContainerSummary(
        str(raw["Id"]), as_labels(raw.get("Labels")), as_truncated_int(raw.get("Created")) or 0
    )


def image_summary(raw: Mapping[str, Any]) -> ImageSummary:
    """One entry of a `GET /images/json` answer."""
    tags = tuple(str(tag) for tag in raw.get("RepoTags") or ())
    return ImageSummary(str(raw["Id"]), tags, as_labels(raw.get("Labels")))


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
        try:
            pid, ppid = int(row[pid_col]), int(row[ppid_col])
            args = " ".join(redact_argv(tuple(visible(str(row[args_col])).split(" "))))
        except (ValueError, TypeError, IndexError, KeyError):
            continue
        rows.append(TopProcess(pid=pid, ppid=ppid, args=args))
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


def parse_event(document: Any, container_id: str | None = None) -> ContainerEvent | None:
    """One event of a `GET /events` stream, if it is one of `EVENT_ACTIONS` on a container.

    None for any other event, for an event of another container than `container_id`
    (its full id, a prefix of it, or its name), and for one without a time.
    """
    if not isinstance(document, dict):
        return None
    kind = document.get("Type")
    if kind is not None and kind != "container":
        return None
    action = document.get("Action") or document.get("status")  # "status": API < 1.22
    if not isinstance(action, str) or action not in EVENT_ACTIONS:
        return None
    actor = as_mapping(document.get("Actor"))
    attributes = as_mapping(actor.get("Attributes"))
    if container_id:
        actor_id = actor.get("ID") or document.get("id")
        name = attributes.get("name")
        if isinstance(actor_id, str) and not actor_id.startswith(container_id) and name != container_id:
            return None
    at = _event_time(document)
    if at is None:
        return None
    signal = attributes.get("signal")
    exit_code = attributes.get("exitCode")
    return ContainerEvent(
        at=at,
        action=action,
        signal=visible(signal, 32) if isinstance(signal, str) and signal else None,
        exit_code=int(exit_code) if isinstance(exit_code, str) and exit_code.lstrip("-").isdigit() else None,
    )


def _event_time(document: Mapping[str, Any]) -> str | None:
    """The event's `timeNano` (else `time`, seconds) as ISO 8601 UTC, to the microsecond."""
    nanos = as_truncated_int(document.get("timeNano"))
    seconds = as_truncated_int(document.get("time"))
    try:
        if nanos:
            moment = datetime.fromtimestamp(nanos // 1_000_000_000, timezone.utc).replace(
                microsecond=nanos // 1000 % 1_000_000
            )
        elif seconds:
            moment = datetime.fromtimestamp(seconds, timezone.utc)
        else:
            return None
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _stream_lines(chunks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """The non-empty lines of a newline-delimited stream, up to `max_bytes` of it.

    A line cut by the limit is dropped; a last line without its newline is kept.
    """
    pending = b""
    read = 0
    for chunk in chunks:
        room = max_bytes - read
        if len(chunk) > room:
            chunk = chunk[:room]
        read += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
        if read >= max_bytes:
            return
    if pending.strip():
        yield pending


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
    """Config.Env ("KEY=value" entries) as a dict."""
    entries = as_mapping(raw.get("Config")).get("Env")
    if not isinstance(entries, list):
        return {}
    pairs = (str(entry).partition("=") for entry in entries)
    return {key: value for key, _, value in pairs}


def _argv(value: Any) -> tuple[str, ...]:
    """Cmd and Entrypoint: a list, or one string (the shell form)."""
    return (visible(value),) if isinstance(value, str) else as_texts(value)


def _aware(moment: datetime) -> datetime:
    """A datetime with a time zone (a naive one is taken as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _unix_time(moment: datetime) -> str:
    """Seconds since the epoch with a fraction, as the engine's `since`/`until` take them."""
    return f"{_aware(moment).timestamp():.6f}"


def _time(value: Any) -> str | None:
    return None if not isinstance(value, str) or not value or value == _NEVER else visible(value)


__all__ = [
    "DEFAULT_SOCKET",
    "EVENT_ACTIONS",
    "FLOW_RUN_ENV",
    "FLOW_RUN_LABEL",
    "ContainerDetails",
    "ContainerNotFound",
    "ContainerSummary",
    "DockerApiError",
    "DockerClient",
    "DockerConfigError",
    "DockerEndpoint",
    "DockerError",
    "DockerPermissionDenied",
    "DockerUnreachable",
    "EngineVersion",
    "ImageSummary",
    "TopProcess",
    "container_details",
    "container_info",
    "container_summary",
    "demux_logs",
    "image_summary",
    "parse_event",
    "parse_stats",
    "parse_top",
    "resolve_endpoint",
]
