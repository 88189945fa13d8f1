"""`DockerClient`: the handful of Engine API calls, answered with records."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from prefect_cancel_doctor.clients._http import PooledClient, httpx
from prefect_cancel_doctor.clients.docker_api.endpoint import (
    DockerEndpoint,
    engine_transport,
    resolve_endpoint,
)
from prefect_cancel_doctor.clients.docker_api.errors import (
    ContainerNotFound,
    DockerApiError,
    DockerError,
    DockerPermissionDenied,
    DockerUnreachable,
)
from prefect_cancel_doctor.clients.docker_api.records import (
    ContainerDetails,
    ContainerSummary,
    EngineVersion,
    ImageSummary,
    TopProcess,
    container_details,
    container_info,
    container_summary,
    image_summary,
    parse_stats,
    parse_top,
)
from prefect_cancel_doctor.clients.docker_api.streams import (
    aware,
    demux_logs,
    parse_event,
    stream_lines,
    unix_time,
)
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.prefect_names import DOCKER_FLOW_RUN_LABEL as FLOW_RUN_LABEL
from prefect_cancel_doctor.core.prefect_names import FLOW_RUN_ENV
from prefect_cancel_doctor.model import ContainerEvent, ContainerInfo, ContainerStats

# Containers inspected one by one when no label names the run (an env-only match).
_ENV_SCAN_LIMIT = 100
# At most this much of an event stream is read, and this many events kept.
_EVENTS_MAX_BYTES = 1 << 20
_EVENTS_MAX = 500


class DockerClient(PooledClient):
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
            transport = engine_transport(endpoint)
        self._http = httpx.Client(transport=transport, base_url=endpoint.base_url, timeout=timeout)

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
            raise self._timed_out(f"answer {method} {path}", exc) from exc
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
            return self._timed_out(f"finish {what}", exc)
        return self._connection_error(exc)

    def _timed_out(self, what: str, exc: httpx.TimeoutException) -> DockerError:
        """The engine did not `what` ("answer GET /…", "finish …") in time."""
        return DockerUnreachable(
            f"the Docker engine at {self.endpoint.url} did not {what} in time ({exc})",
            hint="check that the engine is healthy (`docker info`)",
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
        end = now if until is None else aware(until)
        wait = self.timeout + max(0.0, (end - now).total_seconds())
        deadline = time.monotonic() + wait
        params: dict[str, str | int] = {
            "since": unix_time(since),
            "until": unix_time(end),
            "filters": _filters({"container": [container_id], "type": ["container"]}),
        }
        what = f"GET /events for container {container_id[:12]}"
        response = self._request("GET", "/events", params=params, timeout=wait, stream=True)
        found: list[ContainerEvent] = []
        try:
            for line in stream_lines(response.iter_bytes(), _EVENTS_MAX_BYTES):
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
