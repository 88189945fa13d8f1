"""The Kubernetes API over httpx: a small client answering frozen records.

Why not a library: the official client costs seconds to import; lightkube 1.0
(the light one) now requires ``httpx2`` and ``msgspec`` beside our httpx. The
doctor needs ten calls, so they are here, and nothing outside this module reads
the API's JSON: `KubeClient` returns `Job`, `Pod`, `PodEvent`, `NodeInfo`,
`AccessReview` (defined here), or raises `KubeApiError` carrying the API's
`Status` (code, reason, message) word for word.

The connection is resolved like kubectl's (`prefect_cancel_doctor.clients.kube_config`).
This module is imported only for runs whose `infrastructure_pid` names a
Kubernetes Job, or by ``inspect --pod``.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tempfile
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from prefect_cancel_doctor.clients._fields import as_int, as_labels, as_mapping, as_str, as_text, as_texts
from prefect_cancel_doctor.clients._http import BodyTooLarge, fetch, httpx, max_response_bytes
from prefect_cancel_doctor.clients._http import transport as bounded_transport
from prefect_cancel_doctor.clients.kube_config import KubeConfigError, KubeConnection, resolve_kube_connection
from prefect_cancel_doctor.core import deadline
from prefect_cancel_doctor.core.inert import visible, visible_or_none
from prefect_cancel_doctor.core.prefect_names import CANCEL_SETTINGS, FLOW_RUN_ENV
from prefect_cancel_doctor.core.prefect_names import KUBE_FLOW_RUN_LABEL as FLOW_RUN_LABEL
from prefect_cancel_doctor.core.redact import hold, hold_userinfo, redact_argv, redact_text, scrub
from prefect_cancel_doctor.errors import DoctorError

#: The label the Job controller puts on a Job's pods (and `batch.kubernetes.io/job-name` since 1.27).
JOB_NAME_LABEL = "job-name"
#: Pod Security admission's enforce label on a namespace.
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
_STRATEGIC = "application/strategic-merge-patch+json"
_MERGE = "application/merge-patch+json"


# -- errors ---------------------------------------------------------------------------


class KubeError(DoctorError):
    """The Kubernetes API could not be used; the hint says what to do."""


class KubeUnreachable(KubeError):
    """No API server answers at the configured address (or TLS failed)."""


class KubeApiError(KubeError):
    """The API answered with a `Status` failure: `code`, `reason` and `message` as it sent them."""

    def __init__(
        self, message: str, code: int, reason: str, api_message: str, hint: str | None = None
    ) -> None:
        super().__init__(message, hint)
        self.code = code
        self.reason = reason
        self.api_message = api_message


class KubeNotFound(KubeApiError):
    """404: the object (or the subresource: ephemeral containers disabled) does not exist."""


# -- records --------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnerRef:
    """One `metadata.ownerReferences` entry."""

    kind: str
    name: str


@dataclass(frozen=True)
class JobInfo:
    """A `batch/v1` Job: what the rules read."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    backoff_limit: int | None = None
    #: Condition types that are True (Complete, Failed, Suspended, FailureTarget ...), with reasons.
    conditions: tuple[tuple[str, str | None], ...] = ()
    deletion_timestamp: str | None = None
    finalizers: tuple[str, ...] = ()
    start_time: str | None = None


@dataclass(frozen=True)
class ContainerState:
    """One container's status: `running`, `waiting` or `terminated`, with its facts."""

    name: str
    #: running, waiting, terminated, or unknown (no status yet).
    state: str
    #: ``docker://…``, ``containerd://…``, ``cri-o://…`` (None before it starts).
    container_id: str | None = None
    ready: bool = False
    restart_count: int = 0
    #: waiting/terminated reason (OOMKilled, Error, Completed, CrashLoopBackOff …).
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: The previous run's termination reason (an OOMKilled restart shows here).
    last_reason: str | None = None
    last_exit_code: int | None = None

    @property
    def runtime_id(self) -> str | None:
        """The bare runtime id (the part after ``scheme://``)."""
        return self.container_id.partition("://")[2] or None if self.container_id else None


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a pod's spec (or an ephemeral container's)."""

    name: str
    image: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    #: The run's id from the environment (PREFECT__FLOW_RUN_ID), if set there.
    flow_run_id: str | None = None
    #: Cancellation-related Prefect settings (never secrets).
    settings: dict[str, str] = field(default_factory=dict)
    #: Ephemeral containers only: the container whose namespaces it joins.
    target_container: str | None = None
    #: securityContext.capabilities.add
    capabilities_add: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """command + args as the runtime runs them (the image's own entrypoint when both are empty)."""
        return self.command + self.args


@dataclass(frozen=True)
class PodInfo:
    """A pod: the facts the doctor reads (spec, status, metadata)."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    owners: tuple[OwnerRef, ...] = ()
    node_name: str | None = None
    #: Pending, Running, Succeeded, Failed, Unknown.
    phase: str = "Unknown"
    #: status.reason (Evicted, NodeLost, DeadlineExceeded …) and its message.
    reason: str | None = None
    message: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    termination_grace_period_seconds: int | None = None
    finalizers: tuple[str, ...] = ()
    start_time: str | None = None
    containers: tuple[ContainerSpec, ...] = ()
    statuses: tuple[ContainerState, ...] = ()
    ephemeral_containers: tuple[ContainerSpec, ...] = ()
    ephemeral_statuses: tuple[ContainerState, ...] = ()
    share_process_namespace: bool = False
    #: True condition types (Ready, DisruptionTarget …) with their reasons.
    conditions: tuple[tuple[str, str | None], ...] = ()
    #: The run's id from a container's environment or the pod's labels.
    flow_run_id: str | None = None
    qos_class: str | None = None

    def status_of(self, container: str) -> ContainerState | None:
        """The status of a container (or an ephemeral container) by name."""
        return next((s for s in (*self.statuses, *self.ephemeral_statuses) if s.name == container), None)

    def spec_of(self, container: str) -> ContainerSpec | None:
        """The spec of a container (or an ephemeral container) by name."""
        return next((c for c in (*self.containers, *self.ephemeral_containers) if c.name == container), None)


@dataclass(frozen=True)
class PodEvent:
    """A core/v1 Event about an object (Killing, FailedKillPod, Evicted, OOMKilling …)."""

    type: str
    reason: str
    message: str
    count: int = 1
    #: The latest time it was seen (lastTimestamp, else eventTime, else firstTimestamp).
    last_seen: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class NodeInfo:
    """A node's readiness."""

    name: str
    #: Ready condition: True, False or Unknown (None: not reported).
    ready: str | None
    reason: str | None = None
    message: str | None = None
    last_transition: str | None = None


@dataclass(frozen=True)
class AccessReview:
    """A SelfSubjectAccessReview's answer for one verb on one resource."""

    verb: str
    resource: str
    subresource: str | None
    namespace: str | None
    allowed: bool
    denied: bool = False
    reason: str | None = None

    @property
    def what(self) -> str:
        """``patch pods/ephemeralcontainers in namespace prod``."""
        target = self.resource + (f"/{self.subresource}" if self.subresource else "")
        return f"{self.verb} {target}" + (f" in namespace {self.namespace}" if self.namespace else "")


@dataclass(frozen=True)
class NamespaceInfo:
    """A namespace's labels (Pod Security admission reads its enforce level there)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def pod_security(self) -> str | None:
        """The enforced Pod Security level (privileged, baseline, restricted), if labelled."""
        return self.labels.get(POD_SECURITY_ENFORCE)


# -- the client -----------------------------------------------------------------------


class KubeClient:
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
            transport=transport or _transport(self.connection),
            timeout=timeout,
            auth=_auth(self.connection),
            headers={"Accept": "application/json", "User-Agent": "prefect-cancel-doctor"},
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        raise _api_error(method, path, response, self.connection)

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


def _api_error(method: str, path: str, response: httpx.Response, connection: KubeConnection) -> KubeApiError:
    code = response.status_code
    reason, message = "", response.text.strip()[:500]
    with contextlib.suppress(ValueError, AttributeError):
        status = response.json()
        if isinstance(status, dict) and status.get("kind") == "Status":
            reason = str(status.get("reason") or "")
            message = str(status.get("message") or message)
    message = visible(redact_text(scrub(message, cut=True)), 500)
    text = f"Kubernetes API {code} {reason or response.reason_phrase} on {method} {path}: {message}"
    hint = None
    if code == 401:
        hint = (
            f"the API server did not accept the {connection.auth_method} of {connection.source}: "
            "log in again (`kubectl get pods` should work with the same kubeconfig and context)"
        )
    elif code == 403:
        hint = (
            "grant the verb in a Role bound to this user or service account "
            "(see the README's Kubernetes Role)"
        )
    kind = KubeNotFound if code == 404 else KubeApiError
    return kind(text, code, reason, message, hint)


@contextlib.contextmanager
def _pem_files(cert: str, key: str) -> Iterator[tuple[str, str]]:
    """Client certificate and key in private temporary files (ssl loads chains from files only)."""
    with tempfile.TemporaryDirectory(prefix="pcd-kube-") as directory:
        os.chmod(directory, 0o700)
        paths = (os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
        for path, text in zip(paths, (cert, key), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        yield paths


def ssl_context(connection: KubeConnection) -> ssl.SSLContext:
    """The TLS context kubectl would use: the cluster's CA (else the system's), our client certificate.

    A CA, certificate or key that does not load is a `KubeConfigError` naming the file and field
    it came from (`KubeConnection.origin_of`), never its content."""
    if connection.ca_pem:
        try:
            context = ssl.create_default_context(cadata=connection.ca_pem)
        except (ssl.SSLError, ValueError, TypeError) as exc:
            raise KubeConfigError(
                f"{connection.origin_of('ca')}: not a certificate authority in PEM ({_tls_reason(exc)})",
                hint="it holds the cluster's CA certificate (-----BEGIN CERTIFICATE-----), as "
                "`kubectl config view --raw` shows it",
            ) from exc
    else:
        context = ssl.create_default_context()
    if connection.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if connection.client_cert_pem and connection.client_key_pem:
        try:
            with _pem_files(connection.client_cert_pem, connection.client_key_pem) as (cert, key):
                context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError, UnicodeError) as exc:
            raise KubeConfigError(
                f"{connection.origin_of('client')}: the client certificate and key do not load "
                f"({_tls_reason(exc)})",
                hint="they hold a PEM certificate and its private key (unencrypted), a matching pair",
            ) from exc
    return context


def _tls_reason(exc: BaseException) -> str:
    """What OpenSSL said, in a word (NO_START_LINE, KEY_VALUES_MISMATCH), never a key's bytes."""
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else type(exc).__name__


def _transport(connection: KubeConnection) -> httpx.BaseTransport:
    if connection.server.startswith("https://"):
        return bounded_transport(verify=ssl_context(connection))
    return bounded_transport()


class _BearerAuth(httpx.Auth):
    """Bearer token, re-read from its file for every request (projected tokens rotate)."""

    def __init__(self, connection: KubeConnection) -> None:
        self._connection = connection

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._connection.bearer_token()
        hold(token)  # a token file's content, as it is now
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _auth(connection: KubeConnection) -> httpx.Auth | None:
    if connection.token or connection.token_file:
        return _BearerAuth(connection)
    if connection.username:
        return httpx.BasicAuth(connection.username, connection.password or "")
    return None


# -- parsing ----------------------------------------------------------------------------


def job_info(raw: Mapping[str, Any]) -> JobInfo:
    """A Job document as its record."""
    meta, spec, status = (
        as_mapping(raw.get("metadata")),
        as_mapping(raw.get("spec")),
        as_mapping(raw.get("status")),
    )
    return JobInfo(
        namespace=as_text(meta.get("namespace")) or "",
        name=as_text(meta.get("name")) or "",
        uid=as_str(meta.get("uid")) or "",
        labels=as_labels(meta.get("labels")),
        active=as_int(status.get("active")) or 0,
        succeeded=as_int(status.get("succeeded")) or 0,
        failed=as_int(status.get("failed")) or 0,
        backoff_limit=as_int(spec.get("backoffLimit")),
        conditions=_conditions(status.get("conditions")),
        deletion_timestamp=as_text(meta.get("deletionTimestamp")),
        finalizers=tuple(as_text(f) or "" for f in meta.get("finalizers") or ()),
        start_time=as_text(status.get("startTime")),
    )


def pod_info(raw: Mapping[str, Any]) -> PodInfo:
    """A Pod document as its record; every value a run's configuration sets is made inert."""
    meta, spec, status = (
        as_mapping(raw.get("metadata")),
        as_mapping(raw.get("spec")),
        as_mapping(raw.get("status")),
    )
    containers = tuple(_container_spec(c) for c in spec.get("containers") or () if isinstance(c, dict))
    ephemeral = tuple(
        _container_spec(c) for c in spec.get("ephemeralContainers") or () if isinstance(c, dict)
    )
    labels = as_labels(meta.get("labels"))
    run_id = next((c.flow_run_id for c in containers if c.flow_run_id), None) or labels.get(FLOW_RUN_LABEL)
    return PodInfo(
        namespace=as_text(meta.get("namespace")) or "",
        name=as_text(meta.get("name")) or "",
        uid=as_str(meta.get("uid")) or "",
        labels=labels,
        owners=tuple(
            OwnerRef(as_text(o.get("kind")) or "", as_text(o.get("name")) or "")
            for o in meta.get("ownerReferences") or ()
            if isinstance(o, dict)
        ),
        node_name=as_text(spec.get("nodeName")),
        phase=as_text(status.get("phase")) or "Unknown",
        reason=as_text(status.get("reason")),
        message=as_text(status.get("message")),
        deletion_timestamp=as_text(meta.get("deletionTimestamp")),
        deletion_grace_period_seconds=as_int(meta.get("deletionGracePeriodSeconds")),
        termination_grace_period_seconds=as_int(spec.get("terminationGracePeriodSeconds")),
        finalizers=tuple(as_text(f) or "" for f in meta.get("finalizers") or ()),
        start_time=as_text(status.get("startTime")),
        containers=containers,
        statuses=tuple(
            _container_state(s) for s in status.get("containerStatuses") or () if isinstance(s, dict)
        ),
        ephemeral_containers=ephemeral,
        ephemeral_statuses=tuple(
            _container_state(s) for s in status.get("ephemeralContainerStatuses") or () if isinstance(s, dict)
        ),
        share_process_namespace=bool(spec.get("shareProcessNamespace")),
        conditions=_conditions(status.get("conditions")),
        flow_run_id=visible_or_none(run_id),
        qos_class=as_text(status.get("qosClass")),
    )


def event_info(raw: Mapping[str, Any]) -> PodEvent:
    """An Event document as its record."""
    source = as_mapping(raw.get("source"))
    return PodEvent(
        type=as_text(raw.get("type")) or "Normal",
        reason=as_text(raw.get("reason")) or "",
        message=visible(as_str(raw.get("message")) or "", 500),
        count=as_int(raw.get("count")) or 1,
        last_seen=as_text(raw.get("lastTimestamp"))
        or as_text(raw.get("eventTime"))
        or as_text(raw.get("firstTimestamp")),
        source=as_text(source.get("component")) or as_text(raw.get("reportingComponent")),
    )


def node_info(raw: Mapping[str, Any]) -> NodeInfo:
    """A Node document's Ready condition."""
    meta, status = as_mapping(raw.get("metadata")), as_mapping(raw.get("status"))
    for condition in status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return NodeInfo(
                as_text(meta.get("name")) or "",
                as_text(condition.get("status")),
                as_text(condition.get("reason")),
                as_text(condition.get("message")),
                as_text(condition.get("lastTransitionTime")),
            )
    return NodeInfo(as_text(meta.get("name")) or "", None)


def _container_spec(raw: Mapping[str, Any]) -> ContainerSpec:
    env: dict[str, str] = {
        str(e.get("name")): str(e["value"])
        for e in raw.get("env") or ()
        if isinstance(e, dict) and isinstance(e.get("value"), str)
    }
    capabilities = as_mapping(as_mapping(raw.get("securityContext")).get("capabilities"))
    return ContainerSpec(
        name=as_text(raw.get("name")) or "",
        image=as_text(raw.get("image")),
        command=redact_argv(as_texts(raw.get("command"))),
        args=redact_argv(as_texts(raw.get("args"))),
        flow_run_id=visible_or_none(env.get(FLOW_RUN_ENV)),
        settings={k: visible(env[k]) for k in CANCEL_SETTINGS if k in env},
        target_container=as_text(raw.get("targetContainerName")),
        capabilities_add=as_texts(capabilities.get("add")),
    )


def _container_state(raw: Mapping[str, Any]) -> ContainerState:
    state = as_mapping(raw.get("state"))
    kind = next(
        (k for k in ("running", "terminated", "waiting") if isinstance(state.get(k), dict)), "unknown"
    )
    detail = as_mapping(state.get(kind))
    last = as_mapping(as_mapping(raw.get("lastState")).get("terminated"))
    return ContainerState(
        name=as_text(raw.get("name")) or "",
        state=kind,
        container_id=as_text(raw.get("containerID")),
        ready=bool(raw.get("ready")),
        restart_count=as_int(raw.get("restartCount")) or 0,
        reason=as_text(detail.get("reason")),
        message=as_text(detail.get("message")),
        exit_code=as_int(detail.get("exitCode")),
        signal=as_int(detail.get("signal")),
        started_at=as_text(detail.get("startedAt")),
        finished_at=as_text(detail.get("finishedAt")),
        last_reason=as_text(last.get("reason")),
        last_exit_code=as_int(last.get("exitCode")),
    )


def _conditions(value: Any) -> tuple[tuple[str, str | None], ...]:
    return tuple(
        (as_text(c.get("type")) or "", as_text(c.get("reason")))
        for c in value or ()
        if isinstance(c, dict) and c.get("status") == "True"
    )


def selector(labels: Mapping[str, str]) -> str:
    """A label selector for equality on each label."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def ordered_pods(pods: Sequence[PodInfo]) -> list[PodInfo]:
    """Newest first: a Job's retried pod supersedes the failed one."""
    return sorted(pods, key=lambda p: p.start_time or "", reverse=True)


__all__ = [
    "FLOW_RUN_ENV",
    "FLOW_RUN_LABEL",
    "JOB_NAME_LABEL",
    "POD_SECURITY_ENFORCE",
    "AccessReview",
    "ContainerSpec",
    "ContainerState",
    "JobInfo",
    "KubeApiError",
    "KubeClient",
    "KubeError",
    "KubeNotFound",
    "KubeUnreachable",
    "NamespaceInfo",
    "NodeInfo",
    "OwnerRef",
    "PodEvent",
    "PodInfo",
    "event_info",
    "job_info",
    "node_info",
    "ordered_pods",
    "pod_info",
    "selector",
    "ssl_context",
]
