"""The HTTP(S) front of the fixture: `FakeApiServer` (discovery, authentication and authorization,
routing of every request to the cluster model, `Status` bodies for errors, kubeconfigs) and
`fake_cluster`, which starts one over a fresh `FakeCluster` and cleans up after it.

The top of the fixture's layers: it imports `status`, `patches`, `certificates` and `cluster`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prefect_cancel_doctor.clients.docker_api import DockerClient
from prefect_cancel_doctor.demo.kube_apiserver import certificates
from prefect_cancel_doctor.demo.kube_apiserver.cluster import NODE_NAME, VERSION, FakeCluster
from prefect_cancel_doctor.demo.kube_apiserver.patches import (
    MERGE,
    parse_field_selector,
    parse_label_selector,
)
from prefect_cancel_doctor.demo.kube_apiserver.status import ApiStatus, not_found

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


@dataclass
class Policy:
    """Who may do what. `users` maps bearer tokens to user names; `deny` a user to (verb, resource) pairs."""

    users: dict[str, str] = field(default_factory=dict)
    deny: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def allowed(self, user: str, verb: str, resource: str) -> bool:
        """Whether `user` may `verb` `resource` (``pods/ephemeralcontainers`` form)."""
        denied = self.deny.get(user, set())
        return (verb, resource) not in denied and ("*", resource) not in denied


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
        self._ca: certificates.Authority | None = None

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
        """A new CA (`ca_pem`) and a server certificate signed by it: (certificate path, key path)."""
        self._ca = authority = certificates.new_authority()
        self.ca_pem = authority.pem
        return certificates.server_certificate(authority, self._dir)

    def client_certificate(self, user: str) -> tuple[str, str]:
        """A client certificate (PEM, key PEM) for `user` (its CN), signed by this server's CA."""
        assert self._ca is not None, "start the server with tls=True first"
        return certificates.client_certificate(self._ca, user)

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
        if (
            method == "GET"
            and len(segments) == 7
            and (segments[0], segments[1], segments[2], segments[4], segments[6])
            == ("api", "v1", "namespaces", "pods", "log")
        ):
            return self._log(segments[3], segments[5], params, user)
        with cluster.lock:
            if segments[:2] == ["api", "v1"]:
                return self._core(method, segments[2:], params, body, content_type, user)
            if segments[:3] == ["apis", "batch", "v1"]:
                return self._batch(method, segments[3:], params, body, user)
        raise ApiStatus(404, "NotFound", "the server could not find the requested resource", {})

    def _log(self, namespace: str, name: str, params: Mapping[str, str], user: str) -> tuple[int, bytes]:
        # The kubelet serves a log: the objects are held only to find the pod, not while it is read.
        self._authorize(user, "get", "pods/log", namespace, name)
        with self.cluster.lock:
            pod = self.cluster.get_pod(namespace, name)
        return 200, self.cluster.kubelet.logs(pod, params)

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
                raise not_found("nodes", rest[1])
            return 200, cluster.node()
        if rest == ["pods"] and method == "GET":
            self._authorize(user, "list", "pods", None, None)
            return 200, self._list("Pod", [cluster.pod_view(p) for p in cluster.pods.values()], params)
        if len(rest) == 2 and rest[0] == "namespaces" and method == "GET":
            self._authorize(user, "get", "namespaces", None, rest[1])
            if rest[1] not in cluster.namespaces:
                raise not_found("namespaces", rest[1])
            return 200, cluster.namespaces[rest[1]]
        if len(rest) < 3 or rest[0] != "namespaces":
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource", {})
        namespace, resource, tail = rest[1], rest[2], rest[3:]
        if namespace not in cluster.namespaces and method != "GET":
            raise not_found("namespaces", namespace)
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
                    namespace, name, {} if body is None else body, content_type=content_type or MERGE
                )
            if method == "DELETE":
                self._authorize(user, "delete", "pods", namespace, name)
                grace = (body or {}).get("gracePeriodSeconds")
                if params.get("gracePeriodSeconds"):
                    grace = int(params["gracePeriodSeconds"])
                return 200, cluster.delete_pod(namespace, name, grace)
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
                    content_type=content_type or MERGE,
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
                raise not_found("jobs", name, "batch")
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
