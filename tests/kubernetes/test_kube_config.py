"""The Kubernetes connection is resolved as kubectl resolves it (no cluster needed).

GIVEN kubeconfig files, environments and service-account directories, WHEN
`resolve_kube_connection` runs, THEN it picks the server, context, namespace and
credentials kubectl would, and never shows a secret.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.clients._http import httpx
from prefect_cancel_doctor.clients.kube_api import KubeApiError, KubeClient, KubeNotFound, pod_info
from prefect_cancel_doctor.clients.kube_config import KubeConfigError, resolve_kube_connection


def write_config(
    path: Path,
    *,
    clusters: dict[str, dict[str, Any]],
    users: dict[str, dict[str, Any]],
    contexts: dict[str, dict[str, Any]],
    current: str | None = None,
) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": c} for n, c in contexts.items()],
    }
    if current:
        document["current-context"] = current
    import yaml

    path.write_text(yaml.safe_dump(document))
    return path


def test_kubeconfig_list_merges_first_file_wins(tmp_path: Path) -> None:
    # GIVEN two files naming the same context differently, the current-context only in the second
    first = write_config(
        tmp_path / "a",
        clusters={"prod": {"server": "https://a.example:6443"}},
        users={"me": {"token": "token-a"}},
        contexts={"prod": {"cluster": "prod", "user": "me", "namespace": "flows"}},
    )
    second = write_config(
        tmp_path / "b",
        clusters={"prod": {"server": "https://b.example:6443"}, "dev": {"server": "https://dev:6443"}},
        users={"me": {"token": "token-b"}},
        contexts={"prod": {"cluster": "dev", "user": "me"}},
        current="prod",
    )
    env = {
        "KUBECONFIG": f"{first}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{second}",
        "HOME": str(tmp_path),
    }

    # WHEN
    connection = resolve_kube_connection(environ=env)

    # THEN the first file's definitions win; the current context comes from the second
    assert connection.server == "https://a.example:6443"
    assert connection.namespace == "flows"
    assert connection.context == "prod"
    assert connection.bearer_token() == "token-a"
    assert "token-a" not in repr(connection)


def test_context_flag_and_home_default(tmp_path: Path) -> None:
    kube = tmp_path / ".kube"
    kube.mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    write_config(
        kube / "config",
        clusters={
            "one": {"server": "https://one:6443", "certificate-authority": "../ca.pem"},
            "two": {"server": "https://two:6443", "insecure-skip-tls-verify": True},
        },
        users={"u": {"username": "admin", "password": "hunter2"}},
        contexts={
            "one": {"cluster": "one", "user": "u"},
            "two": {"cluster": "two", "user": "u", "namespace": "etl"},
        },
        current="one",
    )
    env = {"HOME": str(tmp_path)}

    default = resolve_kube_connection(environ=env)
    chosen = resolve_kube_connection(context="two", environ=env)
    by_env = resolve_kube_connection(environ={**env, "PCD_KUBE_CONTEXT": "two"})

    assert default.server == "https://one:6443" and default.ca_pem == ca.read_text()  # relative to the file
    assert (chosen.server, chosen.namespace, chosen.insecure_skip_tls_verify) == (
        "https://two:6443",
        "etl",
        True,
    )
    assert by_env.context == "two"
    assert default.auth_method == "basic auth" and "hunter2" not in repr(default)
    with pytest.raises(KubeConfigError, match="context 'nope' is not defined") as caught:
        resolve_kube_connection(context="nope", environ=env)
    assert "one, two" in (caught.value.hint or "")


def test_client_certificate_data_and_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("rotating-1\n")
    write_config(
        tmp_path / "c",
        clusters={
            "c": {
                "server": "https://c:6443",
                "certificate-authority-data": base64.b64encode(b"PEM-CA").decode(),
            }
        },
        users={
            "u": {
                "client-certificate-data": base64.b64encode(b"PEM-CERT").decode(),
                "client-key-data": base64.b64encode(b"PEM-KEY").decode(),
                "tokenFile": "token",
            }
        },
        contexts={"c": {"cluster": "c", "user": "u"}},
        current="c",
    )
    connection = resolve_kube_connection(str(tmp_path / "c"), environ={"HOME": str(tmp_path)})

    assert connection.ca_pem == "PEM-CA"
    assert (connection.client_cert_pem, connection.client_key_pem) == ("PEM-CERT", "PEM-KEY")
    assert connection.bearer_token() == "rotating-1"
    token.write_text("rotating-2")
    assert connection.bearer_token() == "rotating-2"  # re-read: projected tokens rotate
    assert "PEM-KEY" not in repr(connection)


def test_exec_credential_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential'\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',"
        " 'status': {'token': 'from-plugin-' + os.environ['AUDIENCE']}}))\n"
    )
    write_config(
        tmp_path / "c",
        clusters={"c": {"server": "https://c:6443"}},
        users={
            "u": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": sys.executable,
                    "args": [str(plugin)],
                    "env": [{"name": "AUDIENCE", "value": "eks"}],
                }
            }
        },
        contexts={"c": {"cluster": "c", "user": "u"}},
        current="c",
    )
    connection = resolve_kube_connection(
        str(tmp_path / "c"), environ={"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    )
    assert connection.bearer_token() == "from-plugin-eks"


def test_auth_provider_is_refused_with_a_way_out(tmp_path: Path) -> None:
    write_config(
        tmp_path / "c",
        clusters={"c": {"server": "https://c:6443"}},
        users={"u": {"auth-provider": {"name": "gcp", "config": {"access-token": "secret-token"}}}},
        contexts={"c": {"cluster": "c", "user": "u"}},
        current="c",
    )
    with pytest.raises(KubeConfigError) as caught:
        resolve_kube_connection(str(tmp_path / "c"), environ={"HOME": str(tmp_path)})
    assert "gcp" in str(caught.value) and "secret-token" not in str(caught.value)
    assert "exec credential plugin" in (caught.value.hint or "")


def test_in_cluster_service_account(tmp_path: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("sa-token")
    (account / "ca.crt").write_text("SA-CA")
    (account / "namespace").write_text("prefect\n")
    env = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

    connection = resolve_kube_connection(environ=env, service_account_dir=str(account))

    assert connection.server == "https://10.96.0.1:443"
    assert (connection.namespace, connection.ca_pem, connection.bearer_token()) == (
        "prefect",
        "SA-CA",
        "sa-token",
    )
    assert connection.source == "in-cluster service account"


def test_nothing_configured_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="no Kubernetes configuration") as caught:
        resolve_kube_connection(environ={"HOME": str(tmp_path)}, service_account_dir=str(tmp_path / "none"))
    assert "KUBECONFIG" in (caught.value.hint or "")


def _client(handler: Any) -> KubeClient:
    from prefect_cancel_doctor.clients.kube_config import KubeConnection

    return KubeClient(
        KubeConnection("https://k:6443", "test", token="t0ken"), transport=httpx.MockTransport(handler)
    )


def test_api_errors_keep_the_status_word_for_word() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer t0ken"
        if request.url.path.endswith("/ephemeralcontainers"):
            return httpx.Response(
                404,
                json={
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "the server could not find the requested resource",
                    "reason": "NotFound",
                    "details": {},
                    "code": 404,
                },
            )
        return httpx.Response(
            403,
            json={
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": 'pods "p" is forbidden: User "u" cannot get resource "pods"',
                "reason": "Forbidden",
                "code": 403,
            },
        )

    with _client(handler) as client:
        with pytest.raises(KubeApiError) as forbidden:
            client.get_pod("ns", "p")
        with pytest.raises(KubeNotFound) as missing:
            client.add_ephemeral_container("ns", "p", {"name": "x"})
    assert forbidden.value.code == 403 and forbidden.value.reason == "Forbidden"
    assert 'User "u" cannot get resource "pods"' in str(forbidden.value)
    assert missing.value.api_message == "the server could not find the requested resource"


def test_pod_record_reads_status_and_hides_secrets() -> None:
    raw = {
        "metadata": {
            "name": "etl-abc",
            "namespace": "prod",
            "uid": "u1",
            "labels": {"job-name": "etl"},
            "deletionTimestamp": "2026-01-01T00:00:30Z",
            "deletionGracePeriodSeconds": 30,
            "finalizers": ["example.com/hold"],
            "ownerReferences": [{"kind": "Job", "name": "etl"}],
        },
        "spec": {
            "nodeName": "n1",
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {
                    "name": "prefect-job",
                    "image": "img",
                    "command": ["prefect", "flow-run", "execute"],
                    "args": ["--token", "hunter2"],
                    "env": [
                        {"name": "PREFECT__FLOW_RUN_ID", "value": "r1"},
                        {"name": "PREFECT_API_KEY", "value": "pnu_secret"},
                        {"name": "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR", "value": "reschedule"},
                    ],
                }
            ],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "prefect-job",
                    "containerID": "containerd://abc123",
                    "ready": True,
                    "restartCount": 1,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                }
            ],
        },
    }
    pod = pod_info(raw)
    assert pod.flow_run_id == "r1" and pod.finalizers == ("example.com/hold",)
    status = pod.status_of("prefect-job")
    assert status is not None and status.runtime_id == "abc123" and status.last_reason == "OOMKilled"
    spec = pod.spec_of("prefect-job")
    assert spec is not None and "hunter2" not in " ".join(spec.argv)
    assert spec.settings == {"PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": "reschedule"}
    assert "pnu_secret" not in json.dumps(repr(pod))


def test_client_key_files_are_private_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_cancel_doctor.clients.kube_api import transport as kube_api

    seen: list[tuple[str, int]] = []
    real = kube_api._pem_files

    def spy(cert: str, key: str):  # type: ignore[no-untyped-def]
        with real(cert, key) as paths:
            seen.extend((p, stat.S_IMODE(os.stat(p).st_mode)) for p in paths)
            yield paths

    import contextlib

    monkeypatch.setattr(kube_api, "_pem_files", contextlib.contextmanager(spy))
    from prefect_cancel_doctor.clients.kube_config import KubeConnection

    # not a real certificate: loading fails after the files were written (a configuration error)
    with pytest.raises(KubeConfigError, match="the client certificate and key do not load"):
        kube_api.ssl_context(KubeConnection("https://k", "t", client_cert_pem="CERT", client_key_pem="KEY"))
    assert seen and all(mode == 0o600 for _, mode in seen)
    assert not any(Path(p).exists() for p, _ in seen)
