"""`KubeClient`: the handful of Kubernetes API calls, answered with records."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from prefect_cancel_doctor.clients._fields import as_labels, as_mapping, as_str
from prefect_cancel_doctor.clients._http import BodyTooLarge, PooledClient, fetch, httpx, max_response_bytes
from prefect_cancel_doctor.clients.kube_api.errors import (
    KubeApiError,
    KubeNotFound,
    KubeUnreachable,
    api_error,
)
from prefect_cancel_doctor.clients.kube_api.parse import event_info, job_info, node_info, pod_info
from prefect_cancel_doctor.clients.kube_api.records import (
    AccessReview,
    JobInfo,
    NamespaceInfo,
    NodeInfo,
    PodEvent,
    PodInfo,
)
from prefect_cancel_doctor.clients.kube_api.transport import api_transport, auth
from prefect_cancel_doctor.clients.kube_config import KubeConnection, resolve_kube_connection
from prefect_cancel_doctor.core import deadline
from prefect_cancel_doctor.core.inert import visible_or_none
from prefect_cancel_doctor.core.redact import hold, hold_userinfo

_STRATEGIC = "application/strategic-merge-patch+json"


_MERGE = "application/merge-patch+json"


class KubeClient(PooledClient):
    """The handful of Kubernetes API calls the doctor, its tests and its harness need."""

    def __init__(
        self,
        connection: KubeConnection | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.connection = connection or resolve_kube_connection()
        # What must never be printed, should the API server echo it back: held by value (`redact.scrub`).
        hold(self.connection.token)
        hold(self.connection.client_key_pem)
        hold_userinfo(self.connection.username, self.connection.password)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._cluster_uid: tuple[str | None] | KubeApiError | None = None
        #: The largest answer read (`PCD_MAX_RESPONSE_MB`); a larger one is refused unread.
        self._limit = max_response_bytes()
        self._http = httpx.Client(
            base_url=self.connection.server,
            transport=transport or api_transport(self.connection),
            timeout=timeout,
            auth=auth(self.connection),
            headers={"Accept": "application/json", "User-Agent": "prefect-cancel-doctor"},
        )

    # -- low level ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> httpx.Response:
        """One API call, answered within the request deadline (`deadline`) and the size cap; a
        failure Status becomes `KubeApiError` (404: `KubeNotFound`)."""
        headers = {}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            with deadline.request():
                request = self._http.build_request(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers=headers,
                    timeout=timeout or self.timeout,
                )
                response = fetch(self._http, request, self._limit)
        except deadline.DeadlinePassed as exc:
            raise KubeUnreachable(
                f"the Kubernetes API at {self.connection.server} did not answer {method} {path} "
                f"within {exc.describe()}",
                hint=f"the API server accepts connections but answers slowly, or not at all: check it "
                f"(`kubectl get --raw /readyz`) and any proxy in between; {exc.hint}",
            ) from exc
        except BodyTooLarge as exc:
            raise KubeApiError(
                f"the Kubernetes API at {self.connection.server} answered {method} {path} with more than "
                f"{exc.limit / 2**20:g} MiB: refused, unread",
                0,
                "ResponseTooLarge",
                "",
                hint="is the kubeconfig's server a Kubernetes API server? Raise PCD_MAX_RESPONSE_MB if so",
            ) from exc
        except httpx.TimeoutException as exc:
            raise KubeUnreachable(
                f"the Kubernetes API at {self.connection.server} did not answer {method} {path} in time",
                hint="check the API server is up (`kubectl get --raw /readyz`)",
            ) from exc
        except httpx.TransportError as exc:
            tls = isinstance(exc, httpx.ConnectError) and "CERTIFICATE" in str(exc).upper()
            raise KubeUnreachable(
                f"cannot reach the Kubernetes API at {self.connection.server} "
                f"({self.connection.source}): {exc}",
                hint="the server's certificate is not trusted: check certificate-authority in the kubeconfig"
                if tls
                else "check the server address and that this host can reach it (`kubectl cluster-info`)",
            ) from exc
        if response.status_code < 400:
            return response
        raise api_error(method, path, response, self.connection)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The answer's JSON object (every Kubernetes object and list is one); anything else is a
        `KubeApiError`, never a crash further on."""
        response = self.request(method, path, **kwargs)
        try:
            document = response.json()
        except (ValueError, RecursionError) as exc:
            raise KubeApiError(
                f"the Kubernetes API answered {method} {path} with invalid JSON", response.status_code, "", ""
            ) from exc
        if not isinstance(document, dict):
            raise KubeApiError(
                f"the Kubernetes API answered {method} {path} with JSON that is not an object "
                f"({type(document).__name__})",
                response.status_code,
                "",
                "",
                hint="is the kubeconfig's server a Kubernetes API server?",
            )
        return document

    # -- reads ------------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> JobInfo | None:
        """The Job, or None when it does not exist (deleted)."""
        try:
            return job_info(
                self._json("GET", f"/apis/batch/v1/namespaces/{_seg(namespace)}/jobs/{_seg(name)}")
            )
        except KubeNotFound:
            return None

    def list_pods(self, namespace: str, label_selector: str | None = None) -> list[PodInfo]:
        """Pods of a namespace matching a label selector (``job-name=etl-x``)."""
        params = {"labelSelector": label_selector} if label_selector else None
        document = self._json("GET", f"/api/v1/namespaces/{_seg(namespace)}/pods", params=params)
        return [pod_info(item) for item in document.get("items") or () if isinstance(item, dict)]

    def get_pod(self, namespace: str, name: str) -> PodInfo | None:
        """The pod, or None when it does not exist."""
        try:
            return pod_info(self._json("GET", f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(name)}"))
        except KubeNotFound:
            return None

    def get_node(self, name: str) -> NodeInfo | None:
        """The node's Ready condition, or None when it does not exist."""
        try:
            return node_info(self._json("GET", f"/api/v1/nodes/{_seg(name)}"))
        except KubeNotFound:
            return None

    def cluster_uid(self) -> str | None:
        """The connected cluster's uid: the ``kube-system`` namespace's (what prefect-kubernetes
        recorded as the cluster uid), read once; None when there is no such namespace. Raises
        `KubeApiError` when it may not be read (403: a namespaced Role)."""
        with self._lock:
            if self._cluster_uid is None:
                document = None
                try:
                    document = self._json("GET", "/api/v1/namespaces/kube-system")
                except KubeNotFound:
                    pass
                except KubeApiError as exc:
                    self._cluster_uid = exc  # the same answer for every run of the scan
                    raise
                uid = (
                    as_str(as_mapping(document.get("metadata")).get("uid"))
                    if isinstance(document, dict)
                    else None
                )
                self._cluster_uid = (uid,)
            if isinstance(self._cluster_uid, KubeApiError):
                raise self._cluster_uid
            return self._cluster_uid[0]

    def get_namespace(self, name: str) -> NamespaceInfo | None:
        """The namespace's labels, or None when it does not exist."""
        try:
            document = self._json("GET", f"/api/v1/namespaces/{_seg(name)}")
        except KubeNotFound:
            return None
        return NamespaceInfo(name, as_labels(as_mapping(document.get("metadata")).get("labels")))

    def events_for(self, namespace: str, kind: str, name: str) -> list[PodEvent]:
        """Events about one object, oldest first (``involvedObject.kind``/``name`` field selector)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        document = self._json(
            "GET", f"/api/v1/namespaces/{_seg(namespace)}/events", params={"fieldSelector": selector}
        )
        events = [event_info(item) for item in document.get("items") or () if isinstance(item, dict)]
        return sorted(events, key=lambda e: e.last_seen or "")

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        since_seconds: int | None = None,
        since_time: datetime | None = None,
        limit_bytes: int | None = None,
        tail_lines: int | None = None,
        timestamps: bool = False,
        previous: bool = False,
    ) -> str:
        """`pods/log?container=…` as text (`timestamps`: each line starts with its RFC 3339 time).

        `since_time` is sent to the second (RFC 3339, UTC), as the API server passes it on to the
        kubelet: lines of that second and later come back, and a caller wanting a finer cut filters
        them by their timestamps. `previous` reads the container's previous run (the API answers 400
        when it has not restarted)."""
        params: dict[str, str | int] = {"container": container}
        if timestamps:
            params["timestamps"] = "true"
        if since_seconds is not None:
            params["sinceSeconds"] = since_seconds
        if since_time is not None:
            params["sinceTime"] = since_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if previous:
            params["previous"] = "true"
        if limit_bytes is not None:
            params["limitBytes"] = limit_bytes
        if tail_lines is not None:
            params["tailLines"] = tail_lines
        response = self.request(
            "GET", f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(pod)}/log", params=params, timeout=30.0
        )
        return response.text

    def access_review(
        self,
        verb: str,
        resource: str,
        namespace: str | None,
        *,
        subresource: str | None = None,
        group: str = "",
    ) -> AccessReview:
        """May we `verb` `resource[/subresource]` in `namespace`? (SelfSubjectAccessReview)."""
        attributes: dict[str, str] = {"verb": verb, "resource": resource, "group": group}
        if subresource:
            attributes["subresource"] = subresource
        if namespace:
            attributes["namespace"] = namespace
        document = self._json(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
        )
        status = as_mapping(document.get("status"))
        return AccessReview(
            verb,
            resource,
            subresource,
            namespace,
            bool(status.get("allowed")),
            bool(status.get("denied")),
            visible_or_none(as_str(status.get("reason"))),
        )

    # -- writes ---------------------------------------------------------------------------

    def add_ephemeral_container(
        self,
        namespace: str,
        pod: str,
        container: Mapping[str, Any],
        *,
        strategic: bool = True,
        dry_run: bool = False,
    ) -> PodInfo:
        """PATCH `pods/{pod}/ephemeralcontainers` adding `container` (merged by name).

        A strategic merge patch keys the list by name; a JSON merge patch (the
        fallback) must carry the whole list, so the pod is read first. `dry_run`
        (``dryRun=All``) runs validation and admission (Pod Security, webhooks)
        without adding anything: the API's answer, before the real attempt.
        """
        path = f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(pod)}/ephemeralcontainers"
        params = {"dryRun": "All"} if dry_run else None
        if strategic:
            body: dict[str, Any] = {"spec": {"ephemeralContainers": [dict(container)]}}
            return pod_info(self._json("PATCH", path, body=body, content_type=_STRATEGIC, params=params))
        current = self._json("GET", f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(pod)}")
        existing = [
            c
            for c in as_mapping(current.get("spec")).get("ephemeralContainers") or ()
            if isinstance(c, dict) and c.get("name") != container.get("name")
        ]
        body = {"spec": {"ephemeralContainers": [*existing, dict(container)]}}
        return pod_info(self._json("PATCH", path, body=body, content_type=_MERGE, params=params))

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST an object (the demo harness creates Jobs this way, as a worker does)."""
        return self._json("POST", path, body=dict(body))

    def delete(self, path: str, *, propagation: str | None = None, grace_seconds: int | None = None) -> None:
        """DELETE an object with DeleteOptions; a missing one is not an error."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation:
            body["propagationPolicy"] = propagation
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        with contextlib.suppress(KubeNotFound):
            self.request("DELETE", path, body=body)

    def patch(self, path: str, body: Mapping[str, Any], *, content_type: str = _MERGE) -> dict[str, Any]:
        """PATCH an object (JSON merge patch by default)."""
        return self._json("PATCH", path, body=dict(body), content_type=content_type)


def _seg(value: str) -> str:
    return quote(value, safe="")
