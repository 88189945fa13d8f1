"""The Prefect REST API, as far as the doctor needs it (read-only).

Works against a self-hosted server (optional basic auth string) and Prefect
Cloud workspace URLs (bearer key). The transport is injectable so tests can
replay faults with `httpx.MockTransport`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.errors import ApiRefused, ApiUnreachable
from prefect_cancel_doctor.model import FlowRunRef, WorkerInfo
from prefect_cancel_doctor.settings import Connection

PAGE_SIZE = 200  # the server's default maximum page size (PREFECT_API_DEFAULT_LIMIT)
FINAL_STATE_TYPES = ("CANCELLED", "COMPLETED", "FAILED", "CRASHED")


class PrefectApi:
    """A small synchronous client over the endpoints the doctor reads."""

    def __init__(
        self,
        connection: Connection,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 15.0,
    ) -> None:
        headers = {"User-Agent": f"prefect-cancel-doctor/{__version__}"}
        if connection.api_key:
            headers["Authorization"] = f"Bearer {connection.api_key}"
        elif connection.auth_string:
            token = base64.b64encode(connection.auth_string.encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        self.url = connection.api_url
        self._client = httpx.Client(
            base_url=connection.api_url + "/",
            headers=headers,
            timeout=timeout,
            verify=connection.verify,
            transport=transport or httpx.HTTPTransport(retries=2, verify=connection.verify),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> PrefectApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._client.request(method, path.lstrip("/"), json=body)
        except httpx.TimeoutException as exc:
            raise ApiUnreachable(f"Prefect API at {self.url} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot reach the Prefect API at {self.url}: {exc}") from exc
        if response.status_code in (401, 403):
            raise ApiRefused(
                f"Prefect API refused the request ({response.status_code} "
                f"{response.reason_phrase}) at {self.url}",
                hint="check PREFECT_API_KEY (Cloud) or PREFECT_API_AUTH_STRING (self-hosted); "
                "a Cloud key needs read access to the workspace",
            )
        if response.status_code == 404 and path.endswith("/filter"):
            raise ApiRefused(
                f"{self.url} does not look like a Prefect API (404 on {path})",
                hint="a self-hosted API URL ends in /api, e.g. http://127.0.0.1:4200/api",
            )
        if response.status_code >= 400:
            raise ApiRefused(
                f"Prefect API error {response.status_code} {response.reason_phrase} "
                f"on {method} {path}: {response.text[:200]}"
            )
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise ApiRefused(
                f"{self.url} answered {path} with something that is not JSON",
                hint="is this the API URL (ending in /api) and not the UI's?",
            ) from exc

    def _paged(self, path: str, body: dict[str, Any], sort: str = "ID_DESC") -> Iterator[dict[str, Any]]:
        """Every item of a `/filter` endpoint, page by page, in a stable order."""
        offset, seen = 0, set()
        while True:
            page = self._request("POST", path, {**body, "limit": PAGE_SIZE, "offset": offset, "sort": sort})
            for item in page:
                # Runs that change state while we page can shift between pages.
                if item["id"] not in seen:
                    seen.add(item["id"])
                    yield item
            if len(page) < PAGE_SIZE:
                return
            offset += PAGE_SIZE

    # -- reads ---------------------------------------------------------------

    def check(self) -> None:
        """Fail fast with a clear error when the API is unreachable or refuses."""
        self._request("POST", "/flow_runs/filter", {"limit": 1})

    def cancelling_runs(self) -> list[dict[str, Any]]:
        """All flow runs whose state type is CANCELLING (server-side filter)."""
        body = {"flow_runs": {"state": {"type": {"any_": ["CANCELLING"]}}}}
        return list(self._paged("/flow_runs/filter", body))

    def runs_ended_since(self, since: datetime, state_types: Iterable[str]) -> list[dict[str, Any]]:
        """Flow runs in one of `state_types` whose end time is after `since`."""
        body = {
            "flow_runs": {
                "state": {"type": {"any_": list(state_types)}},
                "end_time": {"after_": since.astimezone(timezone.utc).isoformat()},
            }
        }
        return list(self._paged("/flow_runs/filter", body))

    def runs_by_id(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The flow runs with these ids (missing ids are simply absent)."""
        wanted = sorted(set(ids))
        runs: list[dict[str, Any]] = []
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {"flow_runs": {"id": {"any_": wanted[start : start + PAGE_SIZE]}}}
            runs.extend(self._paged("/flow_runs/filter", body))
        return runs

    def flow_run(self, run_id: str) -> dict[str, Any]:
        """One flow run by id."""
        return dict(self._request("GET", f"/flow_runs/{run_id}"))

    def state_history(self, run_id: str) -> list[dict[str, Any]]:
        """Every state the run has been in, oldest first."""
        states = self._request("GET", f"/flow_run_states/?flow_run_id={run_id}")
        return sorted(states, key=lambda s: s["timestamp"])

    def names(self, kind: str, ids: Iterable[str | None]) -> dict[str, str]:
        """Names of flows or deployments (`kind` = "flows" | "deployments") by id."""
        wanted = sorted({i for i in ids if i})
        names: dict[str, str] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            body = {kind: {"id": {"any_": wanted[start : start + PAGE_SIZE]}}}
            for item in self._paged(f"/{kind}/filter", body, sort="NAME_ASC"):
                names[item["id"]] = item["name"]
        return names

    def pool_workers(self, pool: str) -> list[dict[str, Any]]:
        """The workers registered in a work pool, with status and heartbeat."""
        return list(self._request("POST", f"/work_pools/{pool}/workers/filter", {"limit": PAGE_SIZE}))


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp as an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def cancelling_since(run: dict[str, Any], history: list[dict[str, Any]] | None) -> str | None:
    """When the run last entered CANCELLING: the first of the latest unbroken CANCELLING states."""
    if history:
        since = None
        for state in history:
            if state["type"] == "CANCELLING":
                since = since or state["timestamp"]
            elif since and state["type"] != "CANCELLED":
                since = None
        return since
    state = run.get("state") or {}
    return state.get("timestamp") if state.get("type") == "CANCELLING" else None


def to_flow_run_ref(
    run: dict[str, Any],
    flow_names: dict[str, str],
    deployment_names: dict[str, str],
    history: list[dict[str, Any]] | None = None,
    workers: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> FlowRunRef:
    """Build the report's view of a run from the API's JSON."""
    now = now or datetime.now(timezone.utc)
    state = run.get("state") or {}
    since = cancelling_since(run, history)
    since_dt = parse_time(since)
    return FlowRunRef(
        id=run["id"],
        name=run.get("name") or run["id"],
        flow_name=flow_names.get(run.get("flow_id") or ""),
        deployment_name=deployment_names.get(run.get("deployment_id") or ""),
        work_pool_name=run.get("work_pool_name"),
        state_type=state.get("type") or "UNKNOWN",
        state_name=state.get("name") or "",
        state_message=state.get("message"),
        start_time=run.get("start_time"),
        infrastructure_pid=run.get("infrastructure_pid"),
        labels=dict(run.get("labels") or {}),
        cancelling_for_seconds=(now - since_dt).total_seconds() if since_dt else None,
        cancelling_since=since,
        parent_task_run_id=run.get("parent_task_run_id"),
        workers=tuple(_worker_info(w, now) for w in workers or ()),
    )


def _worker_info(worker: dict[str, Any], now: datetime) -> WorkerInfo:
    beat = parse_time(worker.get("last_heartbeat_time"))
    return WorkerInfo(
        name=worker["name"],
        status=worker.get("status"),
        last_heartbeat_time=worker.get("last_heartbeat_time"),
        seconds_since_heartbeat=(now - beat).total_seconds() if beat else None,
    )
