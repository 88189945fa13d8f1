"""A Kubernetes API server for tests and the demo, backed by the real Docker engine.

No cluster can run on the machines this project is built on (no images can be
pulled, no kube-apiserver package is reachable), so `FakeApiServer` serves the
part of the Kubernetes API that the doctor and ``kubectl get/logs/debug`` use,
with Kubernetes' shapes and semantics, and makes every pod a real container:

- **Discovery**: ``/version``, ``/api``, ``/apis``, ``/api/v1``, ``/apis/batch/v1``,
  ``/apis/authorization.k8s.io/v1`` (legacy discovery documents; a client asking
  for aggregated discovery gets them too, and falls back as client-go does).
- **Namespaces, nodes**: read; a namespace's labels carry Pod Security's
  ``pod-security.kubernetes.io/enforce``; one node, this host (``node_not_ready``
  flips its Ready condition).
- **Jobs** (``batch/v1``): create, get, list (label selectors), delete with
  ``propagationPolicy`` (the API's default for a Job is ``Orphan``, as in
  Kubernetes: the pods stay and lose their ownerReference; ``Background`` deletes
  them; ``Foreground`` too, and keeps the Job Terminating, with the
  ``foregroundDeletion`` finalizer, until they are gone). Creating a Job creates its pod at once (the Job
  controller's labels ``job-name``, ``controller-uid`` and their
  ``batch.kubernetes.io/`` forms, an ownerReference, and its
  ``batch.kubernetes.io/job-tracking`` finalizer, which the Job controller removes
  once the pod is finished, being deleted, or no longer a Job's:
  ``FakeCluster.job_controller = False`` stands for a Job controller that is down
  or behind, and keeps it). Status counts active, succeeded and failed pods.
- **Pods**: get, list (label and field selectors), merge/strategic-merge and JSON
  (RFC 6902) PATCH of metadata (finalizers, labels; a JSON patch whose operation
  does not apply answers 422 ``Invalid``, "the server rejected our request due to
  an error in our request", and one that is not a list of operations 400, as the
  API server does), delete with a grace period (``deletionTimestamp``
  set to now + grace; SIGTERM to every container, SIGKILL when the grace is over,
  as the kubelet does; the object stays **Terminating while finalizers remain**).
  Each container of a pod is a Docker container named as dockershim named them
  (``k8s_<container>_<pod>_<namespace>_<uid>_0``), running the spec's
  ``command``/``args``/``env``, hostPath volumes as binds, ``resources.limits.memory``
  as its memory limit and ``securityContext.capabilities``; its status
  (``running``/``terminated`` with ``exitCode``, ``reason`` OOMKilled/Error/Completed,
  ``containerID: docker://<id>``) and the pod's phase are read from the engine on
  every request. ``shareProcessNamespace: true`` starts a sandbox ("pause")
  container first, named ``k8s_POD_…``, whose PID namespace every container (and
  ephemeral container) joins: it is PID 1 of the pod, the containers' main
  processes are not; it is stopped after them.
- **pods/ephemeralcontainers**: PATCH as a strategic merge patch (keyed by name,
  ``$setElementOrder`` directives ignored) or a JSON merge patch (the whole list),
  with ``dryRun=All`` (validated and admitted, nothing stored or started).
  Validated as the API server does: existing ephemeral containers may not change
  or go, names are unique in the pod, ``targetContainerName`` must exist; then Pod
  Security admission (``baseline`` and ``restricted`` forbid adding ``SYS_PTRACE``,
  with the API's own message). An accepted ephemeral container is a Docker
  container started with ``--pid container:<target's id>`` and its capabilities.
  ``ephemeral_containers=False`` answers 404 on the subresource, as a cluster
  without the feature does. As a kubelet, the fixture never starts an ephemeral
  container added to a pod that is Terminating (``deletionTimestamp`` set) or
  finished: the API accepts it, it is in the spec, and its status stays
  ``waiting`` (``ContainerCreating``) for good.
- **pods/log**: ``container``, ``sinceSeconds``, ``sinceTime`` (RFC 3339; to the
  second, as the API server passes it to the kubelet; not both: 422),
  ``tailLines``, ``limitBytes``, ``timestamps``; the container's Docker log,
  stdout and stderr merged in time order. ``previous=true`` answers 400
  (``previous terminated container "C" in pod "P" not found``): no container of
  the fixture ever restarts.
- **The cluster's identity**: a ``kube-system`` namespace whose uid
  (`FakeCluster.uid`) is the cluster uid prefect-kubernetes (before 3.4.1)
  recorded in ``infrastructure_pid``.
- **Events**: list with field selectors (``involvedObject.kind/name``); the server
  records Scheduled, Created, Started, Killing and Evicted as a kubelet would.
- **SelfSubjectAccessReview**, and **authorization** of every request: each
  bearer token (or client certificate CN) is a user; ``deny`` lists the
  (verb, resource[/subresource]) a user may not use; a denied request gets 403
  with the API server's message, and an unknown token 401.
- **Status** bodies for every error (``kind: Status``, ``reason``, ``code``,
  ``details``), as the API server sends them.
- **TLS** (``tls=True``): a CA, a server certificate for 127.0.0.1 and client
  certificates (`client_certificate`), generated per server.

Pods and their containers share the host's network (as ``hostNetwork: true``),
so they reach a Prefect server on 127.0.0.1; each "image" is a Docker image the
caller maps (`images`), and every container also gets the read-only host mounts
the caller passes (the Docker harness's way of running this interpreter and its
virtualenv in a tiny imported image).

What it does not cover: scheduling (every pod lands on the one node, at once),
admission plugins other than Pod Security's check of ephemeral containers' capabilities,
the real kubelet (no probes, no restart policies but ``Never``, no image pulls:
an image it does not know leaves the container ``waiting`` in ``ErrImagePull``),
Job retries (``backoffLimit`` is kept and shown, no pod is recreated), watches
(``watch=true`` is refused with 405), pod networking (no pod IPs), server-side
apply, ``kubectl exec``/``attach``/``port-forward`` (no SPDY/WebSocket streams),
protobuf bodies (JSON only: ``kubectl auth can-i`` sends protobuf and gets 415),
resource quotas, OpenAPI schemas, and resourceVersion semantics beyond a
counter.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import itertools
import json
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prefect_cancel_doctor.docker_api import ContainerNotFound, DockerClient, DockerError

#: Label on every Docker container the server starts (value: the server's owner tag).
FIXTURE_LABEL = "io.prefect-cancel-doctor.kube-fixture"
#: The one node.
NODE_NAME = "pcd-node-1"
#: The Kubernetes version /version reports.
VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-pcd-fixture", "platform": "linux/amd64"}
#: The finalizer the Job controller puts on each pod of a Job (Kubernetes 1.26+), and removes once it
#: has counted the pod.
JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
#: Capabilities Pod Security's baseline level allows to add (everything else is forbidden).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
        "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip

_STRATEGIC = "application/strategic-merge-patch+json"
_MERGE = "application/merge-patch+json"

#: What the sandbox container of a pod with shareProcessNamespace runs: PID 1 of the pod, reaping
#: orphans and exiting on SIGTERM, as /pause does.
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"

#: (name, kind, namespaced, verbs, short names) of each served resource, for discovery.
_Resource = tuple[str, str, bool, list[str], list[str]]
_CORE_RESOURCES: list[_Resource] = [
    ("pods", "Pod", True, ["create", "delete", "get", "list", "patch", "update"], ["po"]),
    ("pods/log", "Pod", True, ["get"], []),
    ("pods/ephemeralcontainers", "Pod", True, ["get", "patch", "update"], []),
    ("pods/status", "Pod", True, ["get"], []),
    ("events", "Event", True, ["get", "list"], ["ev"]),
    ("namespaces", "Namespace", False, ["get", "list"], ["ns"]),
    ("nodes", "Node", False, ["get", "list"], ["no"]),
]
_BATCH_RESOURCES: list[_Resource] = [
    ("jobs", "Job", True, ["create", "delete", "get", "list", "patch"], []),
    ("jobs/status", "Job", True, ["get"], []),
]
_AUTHZ_RESOURCES: list[_Resource] = [
    ("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ["create"], [])
]


def now_iso(at: float | None = None) -> str:
    """RFC 3339 UTC to the second, as the API server writes timestamps."""
    moment = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _docker_time(value: str | None) -> str | None:
    if not value or value.startswith("0001-"):
        return None
    return value.split(".")[0].rstrip("Z") + "Z"


class ApiStatus(Exception):
    """An error the server answers with a `Status` body."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        # The API server sends `details: {}` on a missing resource (kubectl reads details.name).
        self.details = None if details is None else dict(details)

    def body(self) -> dict[str, Any]:
        """The `Status` document."""
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _not_found(resource: str, name: str, group: str = "") -> ApiStatus:
    kind = resource.split("/")[0]
    details = {"name": name, "kind": kind} | ({"group": group} if group else {})
    what = f"{kind}.{group}" if group else kind
    return ApiStatus(404, "NotFound", f'{what} "{name}" not found', details)


# -- label and field selectors ---------------------------------------------------------


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate for a label selector: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``,
    ``a notin (x)``."""
    # (key, operator, values): operators "in", "notin", "exists", "!exists".
    requirements: list[tuple[str, str, frozenset[str]]] = []
    for part in (p.strip() for p in _split_selector(text)):
        if not part:
            continue
        if " notin " in part or " in " in part:
            operator = "notin" if " notin " in part else "in"
            key, _, values = part.partition(f" {operator} ")
            wanted = frozenset(v.strip() for v in values.strip().strip("()").split(","))
            requirements.append((key.strip(), operator, wanted))
        elif "!=" in part:
            key, _, value = part.partition("!=")
            requirements.append((key.strip(), "notin", frozenset({value.strip()})))
        elif "=" in part:
            key, _, value = part.replace("==", "=").partition("=")
            requirements.append((key.strip(), "in", frozenset({value.strip()})))
        elif part.startswith("!"):
            requirements.append((part[1:].strip(), "!exists", frozenset()))
        else:
            requirements.append((part, "exists", frozenset()))

    def matches(labels: Mapping[str, str]) -> bool:
        for key, operator, values in requirements:
            value = labels.get(key)
            ok = {
                "in": value in values,
                "notin": value not in values,
                "exists": key in labels,
                "!exists": key not in labels,
            }[operator]
            if not ok:
                return False
        return True

    return matches


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_field_selector(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate for ``path.to.field=value`` / ``!=`` terms on a document."""
    terms: list[tuple[list[str], str, bool]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        negate = "!=" in part
        key, _, value = part.replace("==", "=").partition("!=" if negate else "=")
        terms.append((key.strip().split("."), value.strip(), negate))

    def matches(document: Mapping[str, Any]) -> bool:
        for path, value, negate in terms:
            current: Any = document
            for step in path:
                current = current.get(step) if isinstance(current, dict) else None
            if (str(current) == value) == negate:
                return False
        return True

    return matches


# -- patches ---------------------------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


#: List fields merged by a key in a strategic merge patch (the rest are replaced).
_MERGE_KEYS = {
    "containers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge patch for the fields used here: lists of named objects merge by key,
    ``$setElementOrder/…`` and ``$retainKeys`` directives are accepted and ignored, null deletes."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif key in _MERGE_KEYS and isinstance(value, list):
            merge_key = _MERGE_KEYS[key]
            merged = [copy.deepcopy(item) for item in result.get(key) or []]
            for item in value:
                if not isinstance(item, dict):
                    continue
                existing = next((m for m in merged if m.get(merge_key) == item.get(merge_key)), None)
                if item.get("$patch") == "delete":
                    merged = [m for m in merged if m is not existing]
                elif existing is not None:
                    merged[merged.index(existing)] = strategic_merge_patch(existing, item)
                else:
                    merged.append({k: v for k, v in item.items() if not k.startswith("$")})
            result[key] = merged
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


class JsonPatchError(Exception):
    """A JSON patch operation that does not apply to the document."""


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test) on a copy of `target`.

    Raises `ApiStatus` 400 when `operations` is not a list of operations (the API server's
    "cannot unmarshal" answer), and `JsonPatchError` when an operation does not apply.
    """
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise ApiStatus(
            400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    document = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path")
        if not isinstance(path, str):
            raise JsonPatchError(f"operation {op!r} has no path")
        if op == "test":
            if _pointer_get(document, path) != operation.get("value"):
                raise JsonPatchError(f"testing value {path} failed")
        elif op == "remove":
            document = _pointer_remove(document, path)
        elif op == "add":
            if "value" not in operation:
                raise JsonPatchError("add operation has no value")
            document = _pointer_add(document, path, copy.deepcopy(operation["value"]))
        elif op == "replace":
            if "value" not in operation:
                raise JsonPatchError("replace operation has no value")
            document = _pointer_remove(document, path)
            document = _pointer_add(document, path, copy.deepcopy(operation["value"]))
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise JsonPatchError(f"{op} operation has no from")
            value = copy.deepcopy(_pointer_get(document, source))
            if op == "move":
                document = _pointer_remove(document, source)
            document = _pointer_add(document, path, value)
        else:
            raise JsonPatchError(f"unexpected kind of operation {op!r}")
    return document


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, end_ok: bool = False) -> int:
    if end_ok and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise JsonPatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not end_ok):
        raise JsonPatchError(f"array index {index} out of bounds")
    return index


def _parent(document: Any, tokens: list[str]) -> Any:
    current = document
    for token in tokens[:-1]:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token)]
        else:
            raise JsonPatchError(f"doc is missing path: {token!r}")
    return current


def _pointer_get(document: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return document
    parent, last = _parent(document, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last)]
    raise JsonPatchError(f"doc is missing path: {path!r}")


def _pointer_remove(document: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return None
    parent, last = _parent(document, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last)]
    else:
        raise JsonPatchError(f"unable to remove nonexistent key: {last}: missing value")
    return document


def _pointer_add(document: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(document, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, end_ok=True), value)
    else:
        raise JsonPatchError(f"doc is missing path: {path!r}")
    return document


def _apply_patch(target: Any, patch: Any, content_type: str) -> Any:
    """A PATCH body applied as its content type says: JSON patch, strategic merge, or JSON merge."""
    if "json-patch" in content_type:
        try:
            return json_patch(target, patch)
        except JsonPatchError as exc:
            # The API server's answer to an operation that does not apply (jsonpatch's own
            # words are not passed on).
            raise ApiStatus(
                422, "Invalid", "the server rejected our request due to an error in our request", {}
            ) from exc
    if not isinstance(patch, dict):
        raise ApiStatus(
            400, "BadRequest", "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    merge = strategic_merge_patch if "strategic-merge-patch" in content_type else json_merge_patch
    return merge(target, patch)


# -- the cluster's state -----------------------------------------------------------------


@dataclass
class _Pod:
    document: dict[str, Any]
    #: container name → Docker container id (ephemeral containers included).
    docker_ids: dict[str, str] = field(default_factory=dict)
    #: container name → why it has no container ("ErrImagePull", …).
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Evicted by the kubelet: phase Failed, reason Evicted (kept).
    evicted: str | None = None
    deleted_at: float | None = None
    #: The pod sandbox's "pause" container (shareProcessNamespace only): PID 1 of the pod's one PID
    #: namespace, which every container (ephemeral ones too) joins; stopped after them.
    sandbox_id: str | None = None


@dataclass
class Policy:
    """Who may do what. `users` maps bearer tokens to user names; `deny` a user to (verb, resource) pairs."""

    users: dict[str, str] = field(default_factory=dict)
    deny: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def allowed(self, user: str, verb: str, resource: str) -> bool:
        """Whether `user` may `verb` `resource` (``pods/ephemeralcontainers`` form)."""
        denied = self.deny.get(user, set())
        return (verb, resource) not in denied and ("*", resource) not in denied


class FakeCluster:
    """The objects and the Docker containers behind them; the HTTP handler calls into it under `lock`."""

    def __init__(
        self,
        docker: DockerClient,
        *,
        images: Mapping[str, str],
        host_mounts: Iterable[str] = (),
        owner: str = "",
        ephemeral_containers: bool = True,
        extra_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.docker = docker
        self.images = dict(images)
        self.host_mounts = list(host_mounts)
        self.owner = owner or f"{uuid.uuid4().hex[:8]}"
        self.ephemeral_containers = ephemeral_containers
        self.extra_labels = dict(extra_labels or {})
        self.lock = threading.RLock()
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.events: list[dict[str, Any]] = []
        self.node_ready: tuple[str, str, str] = ("True", "KubeletReady", "kubelet is posting ready status")
        #: Whether the Job controller runs: it removes a pod's job-tracking finalizer once the pod is
        #: finished, being deleted, or no Job's any more (False: it is down or far behind).
        self.job_controller = True
        self._version = 1000
        self._timers: list[threading.Timer] = []
        self.ensure_namespace("default")
        # Its uid is the cluster's (what prefect-kubernetes before 3.4.1 recorded as the cluster uid).
        self.ensure_namespace("kube-system")

    @property
    def uid(self) -> str:
        """The cluster uid: the ``kube-system`` namespace's uid."""
        return str(self.namespaces["kube-system"]["metadata"]["uid"])

    # -- bookkeeping ---------------------------------------------------------------------

    def next_version(self) -> str:
        """A new resourceVersion."""
        self._version += 1
        return str(self._version)

    def _meta(
        self, namespace: str | None, name: str, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "resourceVersion": self.next_version(),
            "creationTimestamp": now_iso(),
        }
        if namespace is not None:
            meta["namespace"] = namespace
        if labels:
            meta["labels"] = dict(labels)
        return meta

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Create (or relabel) a namespace."""
        with self.lock:
            namespace = self.namespaces.get(name)
            if namespace is None:
                namespace = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": self._meta(None, name, {"kubernetes.io/metadata.name": name}),
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
                self.namespaces[name] = namespace
            if labels:
                namespace["metadata"].setdefault("labels", {}).update(labels)
            return namespace

    def record_event(
        self,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "kubelet",
    ) -> None:
        """An Event about an object, as a controller or the kubelet records it."""
        stamp = now_iso()
        self.events.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": self._meta(namespace, f"{name}.{secrets.token_hex(8)}"),
                "involvedObject": {
                    "kind": kind,
                    "namespace": namespace,
                    "name": name,
                    "uid": uid,
                    "apiVersion": "v1" if kind == "Pod" else "batch/v1",
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": component, "host": NODE_NAME}
                if component == "kubelet"
                else {"component": component},
                "reportingComponent": component,
                "reportingInstance": NODE_NAME if component == "kubelet" else "",
            }
        )

    # -- jobs -------------------------------------------------------------------------------

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a Job: store it, then create and start its pod (the Job controller's part)."""
        with self.lock:
            if namespace not in self.namespaces:
                raise _not_found("namespaces", namespace)
            job = copy.deepcopy(dict(body))
            meta = job.setdefault("metadata", {})
            name = meta.get("name") or (meta.get("generateName", "job-") + secrets.token_hex(3)[:5])
            if (namespace, name) in self.jobs:
                raise ApiStatus(
                    409,
                    "AlreadyExists",
                    f'jobs.batch "{name}" already exists',
                    {"name": name, "group": "batch", "kind": "jobs"},
                )
            job["apiVersion"], job["kind"] = "batch/v1", "Job"
            fresh = self._meta(namespace, name, meta.get("labels"))
            job["metadata"] = {**meta, **fresh, "labels": meta.get("labels") or {}}
            job["metadata"].pop("generateName", None)
            spec = job.setdefault("spec", {})
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            uid = job["metadata"]["uid"]
            selector = {"batch.kubernetes.io/controller-uid": uid}
            spec["selector"] = {"matchLabels": selector}
            template = spec.setdefault("template", {})
            template_meta = template.setdefault("metadata", {})
            template_meta["labels"] = {
                **(template_meta.get("labels") or {}),
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
            job["status"] = {"startTime": now_iso()}
            self.jobs[(namespace, name)] = job
            finalizers = [f for f in template_meta.get("finalizers") or [] if f != JOB_TRACKING_FINALIZER]
            pod_body = {
                "metadata": {
                    **copy.deepcopy(template_meta),
                    # The Job controller adds its own finalizer to the template's (Kubernetes 1.26+).
                    "finalizers": [*finalizers, JOB_TRACKING_FINALIZER],
                    "generateName": f"{name}-",
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": copy.deepcopy(template.get("spec") or {}),
            }
            pod = self.create_pod(namespace, pod_body)
            self.record_event(
                "Job",
                namespace,
                name,
                uid,
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                component="job-controller",
            )
            return self.job_view(job)

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        """The Job with its status counted from its pods now."""
        view = copy.deepcopy(job)
        uid = job["metadata"]["uid"]
        active = succeeded = failed = 0
        for key, pod in self.pods.items():
            owners = pod.document["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners) or key[0] != job["metadata"]["namespace"]:
                continue
            phase = self.pod_view(pod)["status"]["phase"]
            if phase in ("Pending", "Running") and pod.deleted_at is None:
                active += 1
            elif phase == "Succeeded":
                succeeded += 1
            elif phase == "Failed":
                failed += 1
        status = view.setdefault("status", {})
        for name, count in (("active", active), ("succeeded", succeeded), ("failed", failed)):
            if count:
                status[name] = count
        status["ready"] = active
        if succeeded:
            status["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": now_iso()}]
            status["completionTime"] = now_iso()
        elif failed > view["spec"].get("backoffLimit", 6):
            status["conditions"] = [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": now_iso(),
                }
            ]
        return view

    def delete_job(self, namespace: str, name: str, propagation: str | None) -> dict[str, Any]:
        """DELETE a Job: Orphan (the API's default for Jobs) keeps the pods; Background deletes
        the Job now and its pods after; Foreground keeps the Job, Terminating with the
        ``foregroundDeletion`` finalizer, until its pods are gone. The pods are deleted with
        their own grace period (a grace period given to the Job's deletion is not passed on)."""
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                raise _not_found("jobs", name, "batch")
            uid = job["metadata"]["uid"]
            policy = propagation or "Orphan"
            if policy == "Foreground":
                meta = job["metadata"]
                if "deletionTimestamp" not in meta:
                    meta["deletionTimestamp"] = now_iso()
                    meta["deletionGracePeriodSeconds"] = 0
                    meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
                    meta["resourceVersion"] = self.next_version()
            else:
                del self.jobs[(namespace, name)]
            for (pod_ns, pod_name), pod in list(self.pods.items()):
                owners = pod.document["metadata"].get("ownerReferences") or []
                if pod_ns != namespace or not any(o.get("uid") == uid for o in owners):
                    continue
                if policy == "Orphan":
                    pod.document["metadata"]["ownerReferences"] = [o for o in owners if o.get("uid") != uid]
                    if not pod.document["metadata"]["ownerReferences"]:
                        del pod.document["metadata"]["ownerReferences"]
                    pod.document["metadata"]["resourceVersion"] = self.next_version()
                else:
                    self.delete_pod(pod_ns, pod_name, None)
            self._reap_jobs()
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": "batch", "kind": "jobs", "uid": uid},
            }

    # -- pods -------------------------------------------------------------------------------

    def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a pod, bind it to the node and start its containers."""
        with self.lock:
            if namespace not in self.namespaces:
                raise _not_found("namespaces", namespace)
            document = copy.deepcopy(dict(body))
            meta = document.setdefault("metadata", {})
            name = meta.get("name") or meta.get("generateName", "pod-") + secrets.token_hex(3)[:5]
            if (namespace, name) in self.pods:
                raise ApiStatus(
                    409, "AlreadyExists", f'pods "{name}" already exists', {"name": name, "kind": "pods"}
                )
            fresh = self._meta(namespace, name, meta.get("labels"))
            document["metadata"] = {**meta, **fresh, "labels": meta.get("labels") or {}}
            document["metadata"].pop("generateName", None)
            document["apiVersion"], document["kind"] = "v1", "Pod"
            spec = document.setdefault("spec", {})
            spec["nodeName"] = NODE_NAME
            spec.setdefault("restartPolicy", "Never")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("securityContext", {})
            for container in spec.get("containers") or []:
                _container_defaults(container)
            pod = _Pod(document)
            self.pods[(namespace, name)] = pod
            uid = document["metadata"]["uid"]
            self.record_event(
                "Pod",
                namespace,
                name,
                uid,
                "Scheduled",
                f"Successfully assigned {namespace}/{name} to {NODE_NAME}",
                component="default-scheduler",
            )
            if spec.get("shareProcessNamespace"):
                self._start_sandbox(pod)
            for container in spec.get("containers") or []:
                self._start_container(pod, container, target=None)
            document["status"] = {"startTime": now_iso()}
            return self.pod_view(pod)

    def _start_sandbox(self, pod: _Pod) -> None:
        """shareProcessNamespace: a "pause" container whose PID namespace every container joins (its
        PID 1), run from the first container's image (``/bin/sh`` and ``sleep`` in it)."""
        meta = pod.document["metadata"]
        containers = pod.document["spec"].get("containers") or [{}]
        image = str(containers[0].get("image") or "")
        docker_image = self.images.get(image) or self.images.get(image.split("@")[0])
        if docker_image is None:
            return
        config: dict[str, Any] = {
            "Image": docker_image,
            "Entrypoint": ["/bin/sh", "-c", PAUSE_SCRIPT],
            "Cmd": [],
            "Labels": {
                FIXTURE_LABEL: self.owner,
                "io.kubernetes.pod.name": meta["name"],
                "io.kubernetes.pod.namespace": meta["namespace"],
                "io.kubernetes.container.name": "POD",
                **self.extra_labels,
            },
            "HostConfig": {
                "NetworkMode": "host",
                "Binds": list(self.host_mounts),
                "AutoRemove": False,
                "RestartPolicy": {"Name": "no"},
            },
        }
        try:
            sandbox = self.docker.create(
                config, name=f"k8s_POD_{meta['name']}_{meta['namespace']}_{meta['uid']}_0"
            )
            self.docker.start(sandbox)
        except DockerError as exc:
            self.record_event(
                "Pod", meta["namespace"], meta["name"], meta["uid"], "FailedCreatePodSandBox",
                f"Failed to create pod sandbox: {exc}", "Warning",
            )  # fmt: skip
            return
        pod.sandbox_id = sandbox

    def _start_container(self, pod: _Pod, container: Mapping[str, Any], target: str | None) -> None:
        meta = pod.document["metadata"]
        name = str(container.get("name") or "")
        image = str(container.get("image") or "")
        docker_image = self.images.get(image) or self.images.get(image.split("@")[0])
        if docker_image is None:
            pod.waiting[name] = (
                "ErrImagePull",
                f'failed to pull and unpack image "{image}": the fixture maps no such image',
            )
            self.record_event(
                "Pod",
                meta["namespace"],
                meta["name"],
                meta["uid"],
                "Failed",
                f'Failed to pull image "{image}": not mapped by the fixture',
                "Warning",
            )
            return
        spec = pod.document["spec"]
        volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
        binds = list(self.host_mounts)
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount.get("name")) or {}
            host = (volume.get("hostPath") or {}).get("path")
            if host:
                binds.append(f"{host}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else ""))
        env = [
            f"{e['name']}={e.get('value', '')}"
            for e in container.get("env") or []
            if isinstance(e, dict) and "name" in e
        ]
        host_config: dict[str, Any] = {
            "NetworkMode": "host",
            "Binds": binds,
            "AutoRemove": False,
            "RestartPolicy": {"Name": "no"},
        }
        limits = (container.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            host_config["Memory"] = parse_quantity(str(limits["memory"]))
            host_config["MemorySwap"] = host_config["Memory"]
        capabilities = ((container.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
        if capabilities:
            host_config["CapAdd"] = [str(c) for c in capabilities]
        if pod.sandbox_id is not None:  # one PID namespace for the pod: the sandbox's
            host_config["PidMode"] = f"container:{pod.sandbox_id}"
        elif target is not None:
            host_config["PidMode"] = f"container:{target}"
        config: dict[str, Any] = {
            "Image": docker_image,
            "Env": env,
            "Labels": {
                FIXTURE_LABEL: self.owner,
                "io.kubernetes.pod.name": meta["name"],
                "io.kubernetes.pod.namespace": meta["namespace"],
                "io.kubernetes.container.name": name,
                **self.extra_labels,
            },
            "HostConfig": host_config,
            "Tty": bool(container.get("tty")),
            "OpenStdin": bool(container.get("stdin")),
            "StopSignal": "SIGTERM",
        }
        if container.get("command"):
            config["Entrypoint"] = [str(a) for a in container["command"]]
            config["Cmd"] = [str(a) for a in container.get("args") or []]
        elif container.get("args"):
            config["Cmd"] = [str(a) for a in container["args"]]
        if container.get("workingDir"):
            config["WorkingDir"] = str(container["workingDir"])
        docker_name = f"k8s_{name}_{meta['name']}_{meta['namespace']}_{meta['uid']}_0"
        try:
            docker_id = self.docker.create(config, name=docker_name)
            pod.docker_ids[name] = docker_id
            self.docker.start(docker_id)
        except DockerError as exc:
            pod.waiting[name] = ("CreateContainerError", str(exc))
            self.record_event(
                "Pod", meta["namespace"], meta["name"], meta["uid"], "Failed", f"Error: {exc}", "Warning"
            )
            return
        self.record_event(
            "Pod", meta["namespace"], meta["name"], meta["uid"], "Created", f"Created container {name}"
        )
        self.record_event(
            "Pod", meta["namespace"], meta["name"], meta["uid"], "Started", f"Started container {name}"
        )

    def _container_status(self, pod: _Pod, container: Mapping[str, Any]) -> dict[str, Any]:
        name = str(container.get("name") or "")
        status: dict[str, Any] = {
            "name": name,
            "image": container.get("image"),
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
        }
        if name in pod.waiting:
            reason, message = pod.waiting[name]
            status["state"] = {"waiting": {"reason": reason} | ({"message": message} if message else {})}
            return status
        docker_id = pod.docker_ids.get(name)
        if docker_id is None:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
            return status
        try:
            raw = self.docker.inspect_raw(docker_id)
        except ContainerNotFound:
            status["state"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                }
            }
            return status
        state = raw.get("State") or {}
        status["containerID"] = f"docker://{docker_id}"
        status["imageID"] = f"docker-pullable://{raw.get('Image', '')}"
        if state.get("Running") and not state.get("Paused"):
            status.update(ready=True, started=True)
            status["state"] = {"running": {"startedAt": _docker_time(state.get("StartedAt"))}}
        elif state.get("Status") == "created":
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        else:
            code = int(state.get("ExitCode") or 0)
            reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
            status["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": _docker_time(state.get("StartedAt")),
                    "finishedAt": _docker_time(state.get("FinishedAt")),
                    "containerID": f"docker://{docker_id}",
                }
            }
        return status

    def pod_view(self, pod: _Pod) -> dict[str, Any]:
        """The pod with its status read from the Docker engine now."""
        view = copy.deepcopy(pod.document)
        spec = view.get("spec") or {}
        statuses = [self._container_status(pod, c) for c in spec.get("containers") or []]
        ephemeral = [self._container_status(pod, c) for c in spec.get("ephemeralContainers") or []]
        status = view.setdefault("status", {})
        states = [next(iter(s["state"])) for s in statuses]
        if pod.evicted:
            phase = "Failed"
            status["reason"] = "Evicted"
            status["message"] = pod.evicted
        elif any(s == "running" for s in states):
            phase = "Running"
        elif states and all(s == "terminated" for s in states):
            codes = [s["state"]["terminated"]["exitCode"] for s in statuses]
            phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"
        else:
            phase = "Pending"
        if self._job_controller_sync(pod, phase):
            view["metadata"] = copy.deepcopy(pod.document["metadata"])
        ready = phase == "Running" and all(s["ready"] for s in statuses)
        status.update(
            phase=phase,
            hostIP="127.0.0.1",
            qosClass="Burstable"
            if any((c.get("resources") or {}).get("limits") for c in spec.get("containers") or [])
            else "BestEffort",
            containerStatuses=statuses,
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
                {
                    "type": "Initialized",
                    "status": "True",
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
                {
                    "type": "ContainersReady",
                    "status": str(ready),
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
                {
                    "type": "Ready",
                    "status": str(ready),
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
            ],
        )
        if pod.evicted:
            status["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": pod.evicted,
                }
            )
        if ephemeral:
            status["ephemeralContainerStatuses"] = ephemeral
        return view

    def get_pod(self, namespace: str, name: str) -> _Pod:
        """The stored pod, or a 404 Status."""
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise _not_found("pods", name)
        return pod

    def patch_pod(
        self,
        namespace: str,
        name: str,
        patch: Any,
        strategic: bool = False,
        *,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """PATCH a pod's metadata (labels, annotations, finalizers); spec changes are refused.

        `content_type` (the request's) chooses the kind of patch: JSON patch, strategic merge, or
        JSON merge; without it `strategic` does."""
        kind = content_type or (_STRATEGIC if strategic else _MERGE)
        with self.lock:
            pod = self.get_pod(namespace, name)
            before = copy.deepcopy(pod.document)
            merged = _apply_patch(pod.document, patch, kind)
            if not isinstance(merged, dict) or not isinstance(merged.get("metadata"), dict):
                raise ApiStatus(
                    422,
                    "Invalid",
                    f'Pod "{name}" is invalid: metadata: Required value',
                    {"name": name, "kind": "Pod"},
                )
            if merged.get("spec") != before.get("spec"):
                forbidden = (
                    "Forbidden: pod updates may not change fields other "
                    "than `spec.containers[*].image`, `spec.initContainers[*].image`, "
                    "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing "
                    "tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
                    "was previously negative)"
                )
                raise ApiStatus(
                    422,
                    "Invalid",
                    f'Pod "{name}" is invalid: spec: {forbidden}',
                    # kubectl prints the causes ("The Pod "x" is invalid: spec: Forbidden: ...").
                    {
                        "name": name,
                        "kind": "Pod",
                        "causes": [{"reason": "FieldValueForbidden", "message": forbidden, "field": "spec"}],
                    },
                )
            merged["metadata"]["resourceVersion"] = self.next_version()
            pod.document = merged
            self._reap(namespace, name)
            return self.pod_view(pod) if (namespace, name) in self.pods else merged

    def patch_ephemeral(
        self,
        namespace: str,
        name: str,
        patch: Any,
        strategic: bool,
        user: str,
        dry_run: bool = False,
        *,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """PATCH pods/ephemeralcontainers: validate as the API server does, admit, start the new ones
        (as a kubelet: never in a pod that is Terminating or finished)."""
        kind = content_type or (_STRATEGIC if strategic else _MERGE)
        with self.lock:
            pod = self.get_pod(namespace, name)
            spec = pod.document["spec"]
            before = [copy.deepcopy(c) for c in spec.get("ephemeralContainers") or []]
            if "json-patch" in kind:
                # A JSON patch addresses the whole pod (``/spec/ephemeralContainers/-``).
                whole = copy.deepcopy(pod.document)
                whole["spec"]["ephemeralContainers"] = before
                merged = _apply_patch(whole, patch, kind)
            else:
                merged = _apply_patch({"spec": {"ephemeralContainers": before}}, patch, kind)
            merged_spec = merged.get("spec") if isinstance(merged, dict) else None
            after = (merged_spec if isinstance(merged_spec, dict) else {}).get("ephemeralContainers") or []
            errors = []
            names = [c.get("name") for c in spec.get("containers") or []]
            for old in before:
                new = next((c for c in after if c.get("name") == old.get("name")), None)
                if new is None or new != old:
                    errors.append(
                        "spec.ephemeralContainers: Forbidden: existing ephemeral containers "
                        f'"{old.get("name")}" may not be removed or changed'
                    )
            added = [c for c in after if c.get("name") not in {o.get("name") for o in before}]
            for index, container in enumerate(added, len(before)):
                cname = container.get("name")
                if not cname:
                    errors.append(f"spec.ephemeralContainers[{index}].name: Required value")
                elif cname in names:
                    errors.append(f'spec.ephemeralContainers[{index}].name: Duplicate value: "{cname}"')
                if not container.get("image"):
                    errors.append(f"spec.ephemeralContainers[{index}].image: Required value")
                target = container.get("targetContainerName")
                if target and target not in names:
                    errors.append(
                        f'spec.ephemeralContainers[{index}].targetContainerName: Not found: "{target}"'
                    )
                for forbidden in (
                    "ports",
                    "resources",
                    "livenessProbe",
                    "readinessProbe",
                    "startupProbe",
                    "lifecycle",
                ):
                    if container.get(forbidden):
                        errors.append(
                            f"spec.ephemeralContainers[{index}].{forbidden}: Forbidden: "
                            "cannot be set for an Ephemeral Container"
                        )
            if errors:
                raise ApiStatus(
                    422,
                    "Invalid",
                    f'Pod "{name}" is invalid: '
                    + ("[" + ", ".join(errors) + "]" if len(errors) > 1 else errors[0]),
                    {
                        "name": name,
                        "kind": "Pod",
                        "causes": [{"reason": "FieldValueInvalid", "message": e} for e in errors],
                    },
                )
            level = (self.namespaces[namespace]["metadata"].get("labels") or {}).get(
                "pod-security.kubernetes.io/enforce"
            )
            if level in ("baseline", "restricted"):
                for container in added:
                    caps = ((container.get("securityContext") or {}).get("capabilities") or {}).get(
                        "add"
                    ) or []
                    bad = [
                        c
                        for c in caps
                        if c not in BASELINE_CAPABILITIES
                        and not (level == "restricted" and c == "NET_BIND_SERVICE")
                    ]
                    if bad:
                        listed = ", ".join(f'"{c}"' for c in bad)
                        raise ApiStatus(
                            403,
                            "Forbidden",
                            f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
                            f'non-default capabilities (container "{container.get("name")}" must not '
                            f"include {listed} in securityContext.capabilities.add)",
                            {"name": name, "kind": "pods"},
                        )
            for container in added:
                _container_defaults(container, ephemeral=True)
            if dry_run:  # dryRun=All: validated and admitted, nothing stored or started
                view = self.pod_view(pod)
                view["spec"]["ephemeralContainers"] = after
                return view
            spec["ephemeralContainers"] = after
            pod.document["metadata"]["resourceVersion"] = self.next_version()
            # The kubelet runs only a Terminating pod's termination (and nothing of a finished pod):
            # an ephemeral container added now is in the spec but never starts.
            never = pod.deleted_at is not None or pod.evicted is not None or self._finished(pod)
            for container in added:
                if never:
                    pod.waiting[str(container.get("name"))] = ("ContainerCreating", "")
                    continue
                target = container.get("targetContainerName")
                self._start_container(pod, container, target=pod.docker_ids.get(target) if target else None)
            return self.pod_view(pod)

    def delete_pod(self, namespace: str, name: str, grace: int | None) -> dict[str, Any]:
        """DELETE a pod gracefully: Terminating now, SIGTERM, SIGKILL after the grace; gone once its
        containers stopped and no finalizer remains."""
        with self.lock:
            pod = self.get_pod(namespace, name)
            meta = pod.document["metadata"]
            if pod.deleted_at is not None:
                return self.pod_view(pod)
            if grace is None:
                grace = int(pod.document["spec"].get("terminationGracePeriodSeconds", 30))
            pod.deleted_at = time.time()
            meta["deletionTimestamp"] = now_iso(pod.deleted_at + grace)
            meta["deletionGracePeriodSeconds"] = grace
            meta["resourceVersion"] = self.next_version()
            for cname, docker_id in list(pod.docker_ids.items()):
                self.record_event(
                    "Pod", namespace, name, meta["uid"], "Killing", f"Stopping container {cname}"
                )
                with contextlib.suppress(DockerError):
                    self.docker.kill(docker_id, "SIGKILL" if grace == 0 else "SIGTERM")
            timer = threading.Timer(max(grace, 0), self._after_grace, (namespace, name, meta["uid"]))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
            view = self.pod_view(pod)
            self._reap(namespace, name)
            return view

    def _after_grace(self, namespace: str, name: str, uid: str) -> None:
        with self.lock:
            pod = self.pods.get((namespace, name))
            if pod is None or pod.document["metadata"]["uid"] != uid:
                return
            for docker_id in pod.docker_ids.values():
                with contextlib.suppress(DockerError):
                    if self.docker.inspect(docker_id).running:
                        self.docker.kill(docker_id, "SIGKILL")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with self.lock:
                if self._reap(namespace, name):
                    return
            time.sleep(0.2)

    def _reap(self, namespace: str, name: str) -> bool:
        """Remove a Terminating pod whose containers stopped and which holds no finalizer."""
        pod = self.pods.get((namespace, name))
        if pod is None:
            return True
        self._job_controller_sync(pod, None)
        if pod.deleted_at is None or pod.document["metadata"].get("finalizers"):
            return False
        for docker_id in pod.docker_ids.values():
            with contextlib.suppress(ContainerNotFound):
                if self.docker.inspect(docker_id).running:
                    return False
        for docker_id in [*pod.docker_ids.values(), *([pod.sandbox_id] if pod.sandbox_id else [])]:
            with contextlib.suppress(DockerError):
                self.docker.remove(docker_id)
        del self.pods[(namespace, name)]
        self._reap_jobs()
        return True

    def _reap_jobs(self) -> None:
        """Remove Jobs deleted in the foreground once none of their pods is left."""
        for key, job in list(self.jobs.items()):
            if "foregroundDeletion" not in (job["metadata"].get("finalizers") or []):
                continue
            uid = job["metadata"]["uid"]
            if not any(
                any(o.get("uid") == uid for o in p.document["metadata"].get("ownerReferences") or [])
                for p in self.pods.values()
            ):
                del self.jobs[key]

    def _job_controller_sync(self, pod: _Pod, phase: str | None) -> bool:
        """The Job controller's part for one pod: remove its job-tracking finalizer once the pod is
        finished (`phase` Succeeded/Failed), being deleted, or no Job's (an orphan); True if removed.

        As in Kubernetes (``job_controller.go``: a pod with the finalizer and a deletionTimestamp
        counts as failed at once, its finalizer goes in the same sync), a deleted pod loses it
        before its containers have stopped. A pod that becomes removable this way is reaped soon
        after, as the garbage collector would."""
        meta = pod.document["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if JOB_TRACKING_FINALIZER not in finalizers or not self.job_controller:
            return False
        owners = {o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"}
        owned = any(job["metadata"]["uid"] in owners for job in self.jobs.values())
        if owned and pod.deleted_at is None and phase not in ("Succeeded", "Failed"):
            return False
        rest = [f for f in finalizers if f != JOB_TRACKING_FINALIZER]
        if rest:
            meta["finalizers"] = rest
        else:
            meta.pop("finalizers", None)
        meta["resourceVersion"] = self.next_version()
        if pod.deleted_at is not None and not rest:
            timer = threading.Timer(0.0, self._reap_later, (meta["namespace"], meta["name"], meta["uid"]))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        return True

    def _reap_later(self, namespace: str, name: str, uid: str) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with self.lock:
                pod = self.pods.get((namespace, name))
                if pod is None or pod.document["metadata"]["uid"] != uid or self._reap(namespace, name):
                    return
            time.sleep(0.2)

    def _finished(self, pod: _Pod) -> bool:
        """Every container of the pod has terminated (phase Succeeded or Failed)."""
        containers = pod.document["spec"].get("containers") or []
        states = [next(iter(self._container_status(pod, c)["state"])) for c in containers]
        return bool(states) and all(state == "terminated" for state in states)

    def evict(
        self, namespace: str, name: str, message: str = "The node was low on resource: memory."
    ) -> None:
        """What the kubelet does under node pressure: kill the containers, phase Failed, reason Evicted."""
        with self.lock:
            pod = self.get_pod(namespace, name)
            pod.evicted = message
            for docker_id in [*pod.docker_ids.values(), *([pod.sandbox_id] if pod.sandbox_id else [])]:
                with contextlib.suppress(DockerError):
                    self.docker.kill(docker_id, "SIGKILL")
            meta = pod.document["metadata"]
            self.record_event("Pod", namespace, name, meta["uid"], "Evicted", message, "Warning")

    def set_node_ready(
        self,
        status: str,
        reason: str = "NodeStatusUnknown",
        message: str = "Kubelet stopped posting node status.",
    ) -> None:
        """Flip the node's Ready condition (True, False, Unknown)."""
        with self.lock:
            self.node_ready = (
                status,
                reason if status != "True" else "KubeletReady",
                message if status != "True" else "kubelet is posting ready status",
            )

    def node(self) -> dict[str, Any]:
        """The one node."""
        status, reason, message = self.node_ready
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "uid": "00000000-0000-0000-0000-000000000001",
                "labels": {"kubernetes.io/hostname": NODE_NAME},
                "resourceVersion": str(self._version),
                "creationTimestamp": now_iso(0),
            },
            "spec": {},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": status,
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": now_iso(),
                    }
                ],
                "nodeInfo": {
                    "containerRuntimeVersion": "docker://20.10",
                    "kubeletVersion": VERSION["gitVersion"],
                },
            },
        }

    def logs(self, namespace: str, name: str, params: Mapping[str, str]) -> bytes:
        """pods/log: the container's Docker log (stdout and stderr merged in time order)."""
        pod = self.get_pod(namespace, name)
        spec = pod.document["spec"]
        every = [c.get("name") for c in spec.get("containers") or []] + [
            c.get("name") for c in spec.get("ephemeralContainers") or []
        ]
        container = params.get("container")
        if params.get("sinceSeconds") and params.get("sinceTime"):
            raise ApiStatus(
                422,
                "Invalid",
                f'PodLogOptions "{name}" is invalid: sinceTime: Forbidden: at most one of `sinceTime` or '
                "`sinceSeconds` may be specified",
                {"name": name, "kind": "PodLogOptions"},
            )
        since_time: dt.datetime | None = None
        if params.get("sinceTime"):
            since_time = _parse_rfc3339(params["sinceTime"])
            if since_time is None:
                raise ApiStatus(
                    400,
                    "BadRequest",
                    f'parsing time "{params["sinceTime"]}" as "2006-01-02T15:04:05Z07:00": cannot parse',
                )
        if not container:
            if len(spec.get("containers") or []) != 1:
                listed = " ".join(str(n) for n in every)
                raise ApiStatus(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: [{listed}]",
                )
            container = str(spec["containers"][0].get("name"))
        if container not in every:
            raise ApiStatus(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if params.get("previous") in ("true", "1"):
            # The kubelet's answer: no container of the fixture ever restarts (restartPolicy Never).
            raise ApiStatus(
                400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found'
            )
        docker_id = pod.docker_ids.get(container)
        if docker_id is None:
            reason = pod.waiting.get(container, ("ContainerCreating", ""))[0]
            raise ApiStatus(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {reason}',
            )
        query: dict[str, str | int] = {"stdout": 1, "stderr": 1, "timestamps": 1}
        if params.get("sinceSeconds"):
            query["since"] = int(time.time() - int(params["sinceSeconds"]))
        elif since_time is not None:
            query["since"] = int(since_time.timestamp())  # whole seconds; the exact cut is below
        if params.get("tailLines"):
            query["tail"] = params["tailLines"]
        response = self.docker._request(
            "GET", f"/containers/{docker_id}/logs", params=query, container=docker_id
        )
        from prefect_cancel_doctor.docker_api import demux_logs

        out, err = demux_logs(response.content)
        lines = sorted(
            (line for stream in (out, err) for line in stream.splitlines(keepends=True) if line),
            key=_log_time,
        )
        if since_time is not None:
            # The API server passes sinceTime on to the kubelet to the second (metav1.Time), and the
            # kubelet keeps the lines written at or after it.
            cut = _log_key(since_time.replace(microsecond=0))
            lines = [line for line in lines if _log_time(line) >= cut]
        if params.get("timestamps") not in ("true", "1"):
            lines = [line.split(b" ", 1)[1] if b" " in line else line for line in lines]
        data = b"".join(lines)
        if params.get("limitBytes"):
            data = data[: int(params["limitBytes"])]
        return data

    def remove_all(self) -> None:
        """Delete every container this cluster started (pods, ephemeral containers) and forget them."""
        for timer in self._timers:
            timer.cancel()
        with self.lock:
            for pod in self.pods.values():
                for docker_id in [*pod.docker_ids.values(), *([pod.sandbox_id] if pod.sandbox_id else [])]:
                    with contextlib.suppress(DockerError):
                        self.docker.remove(docker_id)
            self.pods.clear()
            self.jobs.clear()
        with contextlib.suppress(DockerError):
            for summary in self.docker.containers(filters={"label": [f"{FIXTURE_LABEL}={self.owner}"]}):
                with contextlib.suppress(DockerError):
                    self.docker.remove(summary.id)


def _log_time(line: bytes) -> tuple[bytes, bytes]:
    """A Docker log line's RFC 3339 timestamp as a sortable key (its nanoseconds padded to 9 digits)."""
    stamp = line.split(b" ", 1)[0].rstrip(b"Z")
    seconds, _, fraction = stamp.partition(b".")
    return seconds, fraction.ljust(9, b"0")


def _log_key(moment: dt.datetime) -> tuple[bytes, bytes]:
    """A UTC time as `_log_time`'s key."""
    utc = moment.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S").encode(), f"{utc.microsecond:06d}000".encode()


def _parse_rfc3339(text: str) -> dt.datetime | None:
    """An RFC 3339 time (``Z`` or an offset, up to nanoseconds: the fraction is cut to microseconds)."""
    head, dot, rest = text.strip().partition(".")
    if dot:
        digits = "".join(itertools.takewhile(str.isdigit, rest))
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _container_defaults(container: dict[str, Any], *, ephemeral: bool = False) -> None:
    """The fields the API server defaults in every container it stores (clients such as kubectl
    debug read them back)."""
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", "IfNotPresent")
    if not ephemeral:
        container.setdefault("resources", {})


def parse_quantity(text: str) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1G``, ``1e9``) in bytes."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


# -- HTTP --------------------------------------------------------------------------------


def _resource_list(
    group_version: str, resources: list[tuple[str, str, bool, list[str], list[str]]]
) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {
                "name": name,
                "singularName": "" if "/" in name else kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
            }
            | ({"shortNames": short} if short else {})
            for name, kind, namespaced, verbs, short in resources
        ],
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    # every verb goes through `_dispatch`
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, document: Any) -> None:
        self._send(code, json.dumps(document).encode())

    def _dispatch(self, method: str) -> None:
        server = self.server.api
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        record = (method, parts.path, params, self.headers.get("Content-Type"))
        server.requests.append(record)
        try:
            user = self._authenticate(server)
            kind = (self.headers.get("Content-Type") or "application/json").split(";")[0]
            if raw and "json" not in kind:
                # e.g. application/vnd.kubernetes.protobuf: the fixture speaks JSON only.
                raise ApiStatus(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"application/json, application/json-patch+json, application/merge-patch+json, "
                    f"application/strategic-merge-patch+json "
                    f"(not {kind})",
                )
            body = json.loads(raw) if raw else None
            code, document = server.route(
                method, parts.path, params, body, self.headers.get("Content-Type") or "", user
            )
        except ApiStatus as status:
            self._json(status.code, status.body())
            return
        except json.JSONDecodeError as exc:
            self._json(
                400,
                ApiStatus(
                    400, "BadRequest", f"the body of the request was in an unknown format: {exc}"
                ).body(),
            )
            return
        if isinstance(document, bytes):
            self._send(code, document, "text/plain")
        else:
            self._json(code, document)

    def _authenticate(self, server: FakeApiServer) -> str:
        header = self.headers.get("Authorization") or ""
        if header.startswith("Bearer "):
            user = server.policy.users.get(header[7:].strip())
            if user is None:
                raise ApiStatus(401, "Unauthorized", "Unauthorized")
            return user
        connection = self.connection
        if isinstance(connection, ssl.SSLSocket):
            peer = connection.getpeercert()
            if peer:
                for rdn in peer.get("subject", ()):
                    for pair in rdn:
                        if pair[0] == "commonName":
                            return str(pair[1])
        if server.policy.users:
            raise ApiStatus(401, "Unauthorized", "Unauthorized")
        return "system:anonymous"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: FakeApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that exits without closing TLS (the doctor's CLI does) is no error of the server's.
        import sys

        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class FakeApiServer:
    """The HTTP(S) front of a `FakeCluster`: start it, point a kubeconfig at `url`, stop it."""

    def __init__(
        self,
        cluster: FakeCluster,
        *,
        policy: Policy | None = None,
        tls: bool = False,
        workdir: str | Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.policy = policy or Policy()
        self.tls = tls
        self.requests: list[tuple[str, str, dict[str, str], str | None]] = []
        self._dir = Path(workdir or tempfile.mkdtemp(prefix="pcd-kube-api-"))
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.ca_pem: str | None = None
        self._ca: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        """Listen on 127.0.0.1 (a free port) in a thread."""
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.api = self
        if self.tls:
            cert, key = self._certificates()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=self.ca_pem)
            # The handshake happens in each request's thread, not in the accepting one.
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="pcd-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (the cluster's containers are left to `FakeCluster.remove_all`)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's base URL."""
        assert self._httpd is not None, "not started"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def kubeconfig(
        self,
        path: str | Path,
        *,
        token: str | None = None,
        context: str = "pcd-fixture",
        namespace: str = "default",
        client_cert: tuple[str, str] | None = None,
    ) -> Path:
        """Write a kubeconfig for this server (YAML as kubectl writes it); returns its path."""
        user: dict[str, Any] = {}
        if token:
            user["token"] = token
        if client_cert:
            user["client-certificate-data"] = base64.b64encode(client_cert[0].encode()).decode()
            user["client-key-data"] = base64.b64encode(client_cert[1].encode()).decode()
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode()).decode()
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "pcd-fixture", "cluster": cluster}],
            "users": [{"name": f"{context}-user", "user": user}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": "pcd-fixture", "user": f"{context}-user", "namespace": namespace},
                }
            ],
            "current-context": context,
            "preferences": {},
        }
        target = Path(path)
        target.write_text(json.dumps(document, indent=2))
        target.chmod(0o600)
        return target

    # -- certificates ---------------------------------------------------------------------------

    def _certificates(self) -> tuple[str, str]:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        def name(common: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(name("pcd-fixture-ca"))
            .issuer_name(name("pcd-fixture-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        self._ca = (ca, ca_key)
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name("kube-apiserver"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = self._dir / "apiserver.crt", self._dir / "apiserver.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        return str(cert_path), str(key_path)

    def client_certificate(self, user: str) -> tuple[str, str]:
        """A client certificate (PEM, key PEM) for `user` (its CN), signed by this server's CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        assert self._ca is not None, "start the server with tls=True first"
        ca, ca_key = self._ca
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return (
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        )

    # -- routing ---------------------------------------------------------------------------------

    def _authorize(
        self, user: str, verb: str, resource: str, namespace: str | None, name: str | None, group: str = ""
    ) -> None:
        if self.policy.allowed(user, verb, resource):
            return
        kind, _, sub = resource.partition("/")
        what = (
            f'{kind}.{group} "{name}"'
            if group and name
            else f'{kind} "{name}"'
            if name
            else f"{kind}.{group}"
            if group
            else kind
        )
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        resource_text = f"{kind}/{sub}" if sub else kind
        raise ApiStatus(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource_text}" '
            f'in API group "{group}"{where}',
            {"name": name or "", "kind": kind} | ({"group": group} if group else {}),
        )

    def route(
        self, method: str, path: str, params: Mapping[str, str], body: Any, content_type: str, user: str
    ) -> tuple[int, Any]:
        """Answer one request: (status code, JSON document or log bytes)."""
        cluster = self.cluster
        segments = [unquote(s) for s in path.strip("/").split("/") if s]
        if params.get("watch") in ("true", "1"):
            raise ApiStatus(405, "MethodNotAllowed", "the fixture API server does not serve watches")
        if method == "GET" and segments == ["version"]:
            return 200, VERSION
        if method == "GET" and segments == ["api"]:
            return 200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("://")[1]}
                ],
            }
        if method == "GET" and segments == ["apis"]:
            groups = [("batch", "v1"), ("authorization.k8s.io", "v1")]
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                    }
                    for g, v in groups
                ],
            }
        if method == "GET" and segments == ["api", "v1"]:
            return 200, _resource_list("v1", _CORE_RESOURCES)
        if method == "GET" and segments == ["apis", "batch", "v1"]:
            return 200, _resource_list("batch/v1", _BATCH_RESOURCES)
        if method == "GET" and segments == ["apis", "authorization.k8s.io", "v1"]:
            return 200, _resource_list("authorization.k8s.io/v1", _AUTHZ_RESOURCES)
        if method == "GET" and segments in (["apis", "batch"], ["apis", "authorization.k8s.io"]):
            group = segments[1]
            return 200, {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": group,
                "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"},
            }
        if (
            segments == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]
            and method == "POST"
        ):
            return 201, self._access_review(user, body or {})
        with cluster.lock:
            if segments[:2] == ["api", "v1"]:
                return self._core(method, segments[2:], params, body, content_type, user)
            if segments[:3] == ["apis", "batch", "v1"]:
                return self._batch(method, segments[3:], params, body, user)
        raise ApiStatus(404, "NotFound", "the server could not find the requested resource", {})

    def _access_review(self, user: str, body: Mapping[str, Any]) -> dict[str, Any]:
        attributes = ((body.get("spec") or {}).get("resourceAttributes")) or {}
        resource = str(attributes.get("resource") or "")
        if attributes.get("subresource"):
            resource += f"/{attributes['subresource']}"
        allowed = self.policy.allowed(user, str(attributes.get("verb") or ""), resource)
        status: dict[str, Any] = {"allowed": allowed}
        if not allowed:
            status["reason"] = (
                f'RBAC: no rule of the fixture allows user "{user}" to {attributes.get("verb")} {resource}'
            )
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body.get("spec") or {},
            "status": status,
        }

    def _list(
        self, kind: str, items: list[dict[str, Any]], params: Mapping[str, str], group_version: str = "v1"
    ) -> dict[str, Any]:
        if params.get("labelSelector"):
            wanted = parse_label_selector(params["labelSelector"])
            items = [i for i in items if wanted((i.get("metadata") or {}).get("labels") or {})]
        if params.get("fieldSelector"):
            matches = parse_field_selector(params["fieldSelector"])
            items = [i for i in items if matches(i)]
        return {
            "kind": f"{kind}List",
            "apiVersion": group_version,
            "metadata": {"resourceVersion": str(self.cluster._version)},
            "items": items,
        }

    def _core(
        self, method: str, rest: list[str], params: Mapping[str, str], body: Any, content_type: str, user: str
    ) -> tuple[int, Any]:
        cluster = self.cluster
        strategic = "strategic-merge-patch" in content_type
        if rest == ["namespaces"] and method == "GET":
            self._authorize(user, "list", "namespaces", None, None)
            return 200, self._list("Namespace", list(cluster.namespaces.values()), params)
        if rest == ["nodes"] and method == "GET":
            self._authorize(user, "list", "nodes", None, None)
            return 200, self._list("Node", [cluster.node()], params)
        if len(rest) == 2 and rest[0] == "nodes" and method == "GET":
            self._authorize(user, "get", "nodes", None, rest[1])
            if rest[1] != NODE_NAME:
                raise _not_found("nodes", rest[1])
            return 200, cluster.node()
        if rest == ["pods"] and method == "GET":
            self._authorize(user, "list", "pods", None, None)
            return 200, self._list("Pod", [cluster.pod_view(p) for p in cluster.pods.values()], params)
        if len(rest) == 2 and rest[0] == "namespaces" and method == "GET":
            self._authorize(user, "get", "namespaces", None, rest[1])
            if rest[1] not in cluster.namespaces:
                raise _not_found("namespaces", rest[1])
            return 200, cluster.namespaces[rest[1]]
        if len(rest) < 3 or rest[0] != "namespaces":
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource", {})
        namespace, resource, tail = rest[1], rest[2], rest[3:]
        if namespace not in cluster.namespaces and method != "GET":
            raise _not_found("namespaces", namespace)
        if resource == "events" and not tail and method == "GET":
            self._authorize(user, "list", "events", namespace, None)
            items = [e for e in cluster.events if e["metadata"]["namespace"] == namespace]
            return 200, self._list("Event", items, params)
        if resource != "pods":
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource", {})
        if not tail:
            if method == "GET":
                self._authorize(user, "list", "pods", namespace, None)
                # Labels live in the stored document: select first, then read status from the engine.
                wanted = parse_label_selector(params.get("labelSelector") or "")
                items = [
                    cluster.pod_view(p)
                    for (ns, _), p in cluster.pods.items()
                    if ns == namespace and wanted(p.document["metadata"].get("labels") or {})
                ]
                return 200, self._list("Pod", items, params)
            if method == "POST":
                self._authorize(user, "create", "pods", namespace, None)
                return 201, cluster.create_pod(namespace, body or {})
        name = tail[0]
        sub = tail[1] if len(tail) > 1 else None
        if sub is None:
            if method == "GET":
                self._authorize(user, "get", "pods", namespace, name)
                return 200, cluster.pod_view(cluster.get_pod(namespace, name))
            if method == "PATCH":
                self._authorize(user, "patch", "pods", namespace, name)
                return 200, cluster.patch_pod(
                    namespace, name, {} if body is None else body, content_type=content_type or _MERGE
                )
            if method == "DELETE":
                self._authorize(user, "delete", "pods", namespace, name)
                grace = (body or {}).get("gracePeriodSeconds")
                if params.get("gracePeriodSeconds"):
                    grace = int(params["gracePeriodSeconds"])
                return 200, cluster.delete_pod(namespace, name, grace)
        if sub == "log" and method == "GET":
            self._authorize(user, "get", "pods/log", namespace, name)
            return 200, cluster.logs(namespace, name, params)
        if sub == "ephemeralcontainers":
            if not cluster.ephemeral_containers:
                raise ApiStatus(404, "NotFound", "the server could not find the requested resource", {})
            if method == "GET":
                self._authorize(user, "get", "pods/ephemeralcontainers", namespace, name)
                return 200, cluster.pod_view(cluster.get_pod(namespace, name))
            if method in ("PATCH", "PUT"):
                self._authorize(
                    user,
                    "patch" if method == "PATCH" else "update",
                    "pods/ephemeralcontainers",
                    namespace,
                    name,
                )
                if method == "PUT":
                    spec = (body or {}).get("spec") or {}
                    return 200, cluster.patch_ephemeral(
                        namespace,
                        name,
                        {"spec": {"ephemeralContainers": spec.get("ephemeralContainers") or []}},
                        False,
                        user,
                    )
                dry_run = params.get("dryRun") == "All"
                return 200, cluster.patch_ephemeral(
                    namespace,
                    name,
                    {} if body is None else body,
                    strategic,
                    user,
                    dry_run,
                    content_type=content_type or _MERGE,
                )
        if sub == "status" and method == "GET":
            self._authorize(user, "get", "pods/status", namespace, name)
            return 200, cluster.pod_view(cluster.get_pod(namespace, name))
        raise ApiStatus(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _batch(
        self, method: str, rest: list[str], params: Mapping[str, str], body: Any, user: str
    ) -> tuple[int, Any]:
        cluster = self.cluster
        if rest == ["jobs"] and method == "GET":
            self._authorize(user, "list", "jobs", None, None, "batch")
            return 200, self._list(
                "Job", [cluster.job_view(j) for j in cluster.jobs.values()], params, "batch/v1"
            )
        if len(rest) < 3 or rest[0] != "namespaces" or rest[2] != "jobs":
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource", {})
        namespace, tail = rest[1], rest[3:]
        if not tail:
            if method == "GET":
                self._authorize(user, "list", "jobs", namespace, None, "batch")
                items = [cluster.job_view(j) for (ns, _), j in cluster.jobs.items() if ns == namespace]
                return 200, self._list("Job", items, params, "batch/v1")
            if method == "POST":
                self._authorize(user, "create", "jobs", namespace, None, "batch")
                return 201, cluster.create_job(namespace, body or {})
        name = tail[0]
        if len(tail) == 1 and method == "GET":
            self._authorize(user, "get", "jobs", namespace, name, "batch")
            job = cluster.jobs.get((namespace, name))
            if job is None:
                raise _not_found("jobs", name, "batch")
            return 200, cluster.job_view(job)
        if len(tail) == 1 and method == "DELETE":
            self._authorize(user, "delete", "jobs", namespace, name, "batch")
            policy = (body or {}).get("propagationPolicy") or params.get("propagationPolicy")
            return 200, cluster.delete_job(namespace, name, policy)
        raise ApiStatus(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )


@contextlib.contextmanager
def fake_cluster(
    docker: DockerClient,
    *,
    images: Mapping[str, str],
    host_mounts: Iterable[str] = (),
    owner: str = "",
    policy: Policy | None = None,
    tls: bool = False,
    ephemeral_containers: bool = True,
    extra_labels: Mapping[str, str] | None = None,
) -> Iterator[FakeApiServer]:
    """A started `FakeApiServer`; on exit the server stops and every container it started is removed."""
    cluster = FakeCluster(
        docker,
        images=images,
        host_mounts=host_mounts,
        owner=owner,
        ephemeral_containers=ephemeral_containers,
        extra_labels=extra_labels,
    )
    server = FakeApiServer(cluster, policy=policy, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        cluster.remove_all()


__all__ = [
    "BASELINE_CAPABILITIES",
    "FIXTURE_LABEL",
    "JOB_TRACKING_FINALIZER",
    "NODE_NAME",
    "PAUSE_SCRIPT",
    "ApiStatus",
    "FakeApiServer",
    "FakeCluster",
    "JsonPatchError",
    "Policy",
    "fake_cluster",
    "json_merge_patch",
    "json_patch",
    "parse_field_selector",
    "parse_label_selector",
    "parse_quantity",
    "strategic_merge_patch",
]
