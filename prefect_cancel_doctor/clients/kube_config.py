"""Where the Kubernetes API is and who we are to it, resolved the way kubectl resolves it.

Order (client-go's `ClientConfigLoadingRules`, which kubectl uses):

1. ``--kubeconfig FILE`` (or ``PCD_KUBECONFIG``): that one file, which must exist;
2. ``KUBECONFIG``: a list of files (``:``-separated), merged: for each cluster, user
   and context *name* the first file that defines it wins, and ``current-context``
   comes from the first file that sets one; files that do not exist are skipped;
3. ``~/.kube/config``;
4. none of them: the in-cluster service account (``KUBERNETES_SERVICE_HOST``/``_PORT``,
   ``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}``), as a
   pod running the doctor (the node-mode DaemonSet) gets it.

The context is ``--context`` (``PCD_KUBE_CONTEXT``), else ``current-context``. Paths
in a kubeconfig are relative to the file that names them. Credentials supported:
bearer ``token`` and ``tokenFile``, client certificates (files or ``-data``),
basic auth, and ``exec`` credential plugins (``client.authentication.k8s.io``
ExecCredential: EKS, GKE, AKS, OIDC login helpers). Legacy ``auth-provider``
entries are refused with a hint (kubectl removed them too).

Credentials never leave `KubeConnection` (fields with ``repr=False``); error
messages name the file and the field, never a value. Reading and merging the files, and the
fields of their entries, is `kube_files`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.clients._fields import as_str
from prefect_cancel_doctor.clients.kube_files import (
    Entry,
    KubeConfigError,
    MergedConfig,
    entry_flag,
    entry_pem,
    entry_string,
    load_kubeconfig_file,
    merge_kubeconfigs,
    pem_field,
    read_text,
    relative_to,
)
from prefect_cancel_doctor.core.redact import hold, redact_text

#: Where a pod's service account is mounted.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Overrides of the flags, for scheduled runs.
KUBECONFIG_ENV = "PCD_KUBECONFIG"
CONTEXT_ENV = "PCD_KUBE_CONTEXT"
#: How long an exec credential plugin may take.
EXEC_TIMEOUT = 60.0


@dataclass(frozen=True)
class KubeConnection:
    """One resolved connection: the API server and the credentials to present."""

    #: The API server's base URL (``https://10.0.0.1:6443``).
    server: str
    #: Where it was read: the kubeconfig file(s) and context, or "in-cluster service account".
    source: str
    #: The context's name (None in-cluster).
    context: str | None = None
    #: The context's namespace, else "default" (in-cluster: the pod's own).
    namespace: str = "default"
    #: PEM of the CA bundle to trust (None: the system's).
    ca_pem: str | None = field(default=None, repr=False)
    insecure_skip_tls_verify: bool = False
    #: SNI / verification name when it differs from the server's host.
    tls_server_name: str | None = None
    #: Client certificate and key, PEM.
    client_cert_pem: str | None = field(default=None, repr=False)
    client_key_pem: str | None = field(default=None, repr=False)
    #: Bearer token (token, tokenFile, an exec plugin's or the service account's).
    token: str | None = field(default=None, repr=False)
    #: A token file re-read on every connection (service-account tokens rotate).
    token_file: str | None = None
    #: Basic auth.
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Where the TLS material was set, for errors: ("ca", "FILE: cluster 'c', certificate-authority-data"),
    #: ("client", "FILE: user 'u', client-certificate-data and client-key-data").
    origins: tuple[tuple[str, str], ...] = ()

    def origin_of(self, what: str) -> str:
        """Where `what` ("ca", "client") was set: the file and the field."""
        return dict(self.origins).get(what) or self.source

    @property
    def auth_method(self) -> str:
        """Which credential is presented, in words (never its value)."""
        if self.client_cert_pem:
            return "client certificate"
        if self.token or self.token_file:
            return "bearer token"
        if self.username:
            return "basic auth"
        return "no credentials"

    def bearer_token(self) -> str | None:
        """The token to send: the file's current content when it is a file, else the token."""
        if self.token_file:
            return read_text(self.token_file, "the token file").strip() or None
        return self.token


def resolve_kube_connection(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: str | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> KubeConnection:
    """The connection kubectl would use with these flags and this environment."""
    env = os.environ if environ is None else environ
    kubeconfig = kubeconfig or env.get(KUBECONFIG_ENV) or None
    context = context or env.get(CONTEXT_ENV) or None
    if kubeconfig:
        if not Path(kubeconfig).is_file():
            raise KubeConfigError(
                f"the kubeconfig {kubeconfig} does not exist",
                hint="pass an existing file to --kubeconfig (or PCD_KUBECONFIG)",
            )
        files = [kubeconfig]
    elif env.get("KUBECONFIG"):
        files = [p for p in env["KUBECONFIG"].split(os.pathsep) if p and Path(p).is_file()]
    else:
        default = Path(home or env.get("HOME") or Path.home()) / ".kube" / "config"
        files = [str(default)] if default.is_file() else []
    if not files:
        if env.get("KUBERNETES_SERVICE_HOST") and Path(service_account_dir, "token").is_file():
            return in_cluster_connection(env, service_account_dir)
        where = f"KUBECONFIG={env['KUBECONFIG']}" if env.get("KUBECONFIG") else "~/.kube/config"
        raise KubeConfigError(
            f"no Kubernetes configuration: {where} does not exist and this is not a pod",
            hint="point KUBECONFIG or --kubeconfig at a kubeconfig (`kubectl config view` shows the one "
            "kubectl uses), or run the doctor in a pod with a service account",
        )
    merged = merge_kubeconfigs([(path, load_kubeconfig_file(path)) for path in files])
    return connection_from_config(merged, context, env)


def in_cluster_connection(
    env: Mapping[str, str], service_account_dir: str = SERVICE_ACCOUNT_DIR
) -> KubeConnection:
    """The pod's service account, as client-go's `InClusterConfig` reads it."""
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    base = Path(service_account_dir)
    ca = base / "ca.crt"
    namespace = base / "namespace"
    return KubeConnection(
        server=f"https://{_host_port(host, port)}",
        source="in-cluster service account",
        namespace=read_text(str(namespace), "the service account's namespace").strip()
        if namespace.is_file()
        else "default",
        ca_pem=read_text(str(ca), "the service account's CA") if ca.is_file() else None,
        token_file=str(base / "token"),
        origins=(("ca", str(ca)),),
    )


def _host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connection_from_config(
    merged: MergedConfig, context_name: str | None, env: Mapping[str, str] | None = None
) -> KubeConnection:
    """The connection of one context of a merged configuration."""
    files = ", ".join(merged.files)
    name = context_name or merged.current_context
    if not name:
        raise KubeConfigError(
            f"no current-context in {files}",
            hint="pick one with --context NAME (`kubectl config get-contexts` lists them) "
            "or `kubectl config use-context NAME`",
        )
    context = merged.contexts.get(name)
    if context is None:
        raise KubeConfigError(
            f"context {name!r} is not defined in {files}",
            hint="known contexts: " + (", ".join(sorted(merged.contexts)) or "none"),
        )
    cluster_name = context.body.get("cluster")
    cluster = merged.clusters.get(str(cluster_name)) if cluster_name else None
    if cluster is None:
        raise KubeConfigError(
            f"context {name!r} names cluster {cluster_name!r}, which {files} does not define"
        )
    server = cluster.body.get("server")
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"cluster {cluster_name!r} in {cluster.origin} has no server")
    if not _is_server_url(server):
        raise KubeConfigError(
            f"{cluster.where('server')} is not an http(s) URL",
            hint="it looks like https://10.0.0.1:6443 (`kubectl config view` shows it)",
        )
    user_name = context.body.get("user")
    user = merged.users.get(str(user_name)) if user_name else None
    ca_pem = entry_pem(cluster, "certificate-authority")
    credentials: dict[str, Any] = {}
    if user is not None:
        credentials = _credentials(user, str(user_name), server, env or os.environ)
    origins = (("ca", cluster.where(pem_field(cluster, "certificate-authority"))),)
    return KubeConnection(
        server=server.rstrip("/"),
        source=f"{files} (context {name})",
        context=name,
        namespace=entry_string(context, "namespace") or "default",
        ca_pem=ca_pem,
        insecure_skip_tls_verify=entry_flag(cluster, "insecure-skip-tls-verify"),
        tls_server_name=entry_string(cluster, "tls-server-name"),
        **{**credentials, "origins": origins + credentials.get("origins", ())},
    )


def _is_server_url(server: str) -> bool:
    """An API server address httpx can use: http(s), a host, printable ASCII (host names in IDNA)."""
    from urllib.parse import urlsplit

    if not server.isascii() or not server.isprintable() or any(c.isspace() for c in server):
        return False
    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _credentials(user: Entry, name: str, server: str, env: Mapping[str, str]) -> dict[str, Any]:
    body = user.body
    if body.get("auth-provider"):
        provider = (
            (body["auth-provider"] or {}).get("name", "?") if isinstance(body["auth-provider"], dict) else "?"
        )
        raise KubeConfigError(
            f"user {name!r} in {user.origin} uses the `{provider}` auth-provider, "
            "which kubectl no longer supports",
            hint="switch the user to an exec credential plugin (e.g. gke-gcloud-auth-plugin, kubelogin)",
        )
    found: dict[str, Any] = {}
    cert, key = entry_pem(user, "client-certificate"), entry_pem(user, "client-key")
    if cert and key:
        fields = f"{pem_field(user, 'client-certificate')} and {pem_field(user, 'client-key')}"
        found.update(client_cert_pem=cert, client_key_pem=key, origins=(("client", user.where(fields)),))
    elif cert or key:
        raise KubeConfigError(
            f"user {name!r} in {user.origin} has a client certificate without its key, "
            "or a key without its certificate"
        )
    token = entry_string(user, "token")
    if token:
        found["token"] = token
    elif token_file := entry_string(user, "tokenFile"):
        found["token_file"] = relative_to(token_file, user.origin)
    if username := entry_string(user, "username"):
        found.update(username=username, password=entry_string(user, "password") or "")
    spec = body.get("exec")
    if spec is not None and not isinstance(spec, dict):
        raise KubeConfigError(f"{user.where('exec')} is not a mapping")
    if spec and not found.get("token"):
        plugin = _exec_credential(spec, name, user.origin, server, env)
        if "client_cert_pem" in plugin:
            command = spec.get("command")
            where = f"the certificate of the credential plugin {command!r} of {user.where('exec')}"
            plugin["origins"] = (("client", where),)
        found.update(plugin)
    return found


def _exec_credential(
    spec: Mapping[str, Any], user: str, origin: str, server: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """Run an exec credential plugin and read its ExecCredential (token or client certificate)."""
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise KubeConfigError(f"user {user!r} in {origin}: `exec` has no command")
    if "/" in command and not os.path.isabs(command):
        command = relative_to(command, origin)
    raw_args, raw_env = spec.get("args") or [], spec.get("env") or []
    if not isinstance(raw_args, list) or not isinstance(raw_env, list):
        raise KubeConfigError(f"user {user!r} in {origin}: `exec` has `args` or `env` that is not a list")
    args = [str(a) for a in raw_args]
    child_env = dict(env)
    for item in raw_env:
        if isinstance(item, dict) and "name" in item:
            child_env[str(item["name"])] = str(item.get("value") or "")
    api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    child_env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    timeout = _plugin_timeout()
    try:
        done = _run_plugin([command, *args], child_env, timeout)
    except FileNotFoundError as exc:
        hint = as_str(spec.get("installHint"))
        raise KubeConfigError(
            f"user {user!r} in {origin}: the credential plugin {command!r} is not installed",
            hint=hint or f"install {command} or put it on PATH",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise KubeConfigError(
            f"the credential plugin {command!r} did not answer within {timeout:g} s; it was stopped, "
            "with every process it started"
        ) from exc
    except OSError as exc:
        raise KubeConfigError(
            f"user {user!r} in {origin}: cannot run the credential plugin {command!r} ({exc.strerror or exc})"
        ) from exc
    if done.returncode != 0:
        _hold_token(done.stdout)  # a token it printed is one the doctor holds: never shown (redact.scrub)
        tail = redact_text(done.stderr.decode(errors="replace")).strip().splitlines()[-1:] or [""]
        raise KubeConfigError(
            f"the credential plugin {command!r} of user {user!r} failed "
            f"(exit {done.returncode}): {tail[0][:300]}",
            hint="run the plugin by hand to log in again, then retry",
        )
    try:
        status = json.loads(done.stdout)["status"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise KubeConfigError(f"the credential plugin {command!r} printed no ExecCredential status") from exc
    if not isinstance(status, dict):
        raise KubeConfigError(
            f"the credential plugin {command!r} printed an ExecCredential status that is not an object"
        )
    found: dict[str, Any] = {}
    if status.get("token"):
        found["token"] = str(status["token"])
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if cert and key:
        if not isinstance(cert, str) or not isinstance(key, str):
            raise KubeConfigError(
                f"the credential plugin {command!r} printed a clientCertificateData or clientKeyData "
                "that is not a string"
            )
        found.update(client_cert_pem=cert, client_key_pem=key)
    if not found:
        raise KubeConfigError(f"the credential plugin {command!r} returned neither a token nor a certificate")
    return found


def _plugin_timeout() -> float:
    """`EXEC_TIMEOUT`, or less when the command's deadline comes sooner."""
    from prefect_cancel_doctor.core import deadline

    left = deadline.remaining()
    return EXEC_TIMEOUT if left is None else max(0.01, min(EXEC_TIMEOUT, left))


def _run_plugin(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run a credential plugin in a session of its own, and end the whole session's process group
    when it takes longer than `timeout` (or the doctor is interrupted): a plugin that hangs leaves
    nothing it started behind (a `sleep`, a browser login helper). A plugin that answers in time
    keeps what it left running in the background, as kubectl does."""
    with subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            _end_group(process)
            raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the plugin's process group (its pid: `start_new_session`), then reap the plugin.

    The pipes are closed without reading them to the end: a child that left the group (its own
    `setsid`) may hold them open."""
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    process.wait()


def _hold_token(stdout: bytes) -> None:
    """Hold (`redact.hold`) the token in what a failing credential plugin printed, if any."""
    try:
        token = json.loads(stdout)["status"]["token"]
    except (ValueError, LookupError, TypeError, RecursionError):
        return
    hold(as_str(token))


__all__ = [
    "CONTEXT_ENV",
    "KUBECONFIG_ENV",
    "SERVICE_ACCOUNT_DIR",
    "KubeConfigError",
    "KubeConnection",
    "MergedConfig",
    "connection_from_config",
    "in_cluster_connection",
    "load_kubeconfig_file",
    "merge_kubeconfigs",
    "resolve_kube_connection",
]
