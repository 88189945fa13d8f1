"""A malformed kubeconfig is a configuration error that names the file and the field, never a crash.

GIVEN kubeconfigs with non-UTF-8 bytes, a certificate authority or client key that is not PEM,
data that is not base64, a client key that does not match its certificate, or fields of the
wrong type, WHEN the connection is resolved and its client built (as a scan does on its first
Kubernetes run), THEN the error is a `KubeConfigError` (exit 2) naming the file and the field,
showing no key material; `inspect --pod` says it in one line with exit 2 (it was exit 4, an
"internal error"); and no kubeconfig document whatever ends otherwise (fuzzed).
"""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_cancel_doctor.clients.kube_api import KubeClient
from prefect_cancel_doctor.clients.kube_config import KubeConfigError, resolve_kube_connection
from tests.helpers import clean_environ, run_cli

SERVER = "https://127.0.0.1:6443"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def certificate_and_key(common: str = "doctor") -> tuple[str, str]:
    """A self-signed certificate and its key, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def kubeconfig(path: Path, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "prod", "cluster": {"server": SERVER, **(cluster or {})}}],
        "users": [{"name": "admin", "user": user if user is not None else {"token": "t0ken-value"}}],
        "contexts": [{"name": "c", "context": {"cluster": "prod", "user": "admin"}}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def connect(path: Path) -> KubeClient:
    """What a scan does on its first Kubernetes run: resolve, then build the client."""
    return KubeClient(resolve_kube_connection(str(path), environ={"HOME": str(path.parent)}))


CERT, KEY = certificate_and_key()
OTHER_CERT, OTHER_KEY = certificate_and_key("other")


def malformed(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each malformed kubeconfig, with the field its error must name."""
    not_utf8 = tmp_path / "not-utf8"
    not_utf8.write_bytes(b"apiVersion: v1\nclusters: []\n# caf\xe9 \xff\xfe\n")
    ca_file = tmp_path / "ca-latin1.crt"
    ca_file.write_bytes(b"-----BEGIN CERTIFICATE-----\n\xe9\xe9\n-----END CERTIFICATE-----\n")
    return {
        "not UTF-8": (not_utf8, "is not UTF-8 text"),
        "CA data not PEM": (
            kubeconfig(tmp_path / "ca-not-pem", {"certificate-authority-data": b64("not a certificate")}),
            "cluster 'prod', certificate-authority-data",
        ),
        "CA data not base64": (
            kubeconfig(tmp_path / "ca-not-b64", {"certificate-authority-data": "%%% not base64 %%%"}),
            "cluster 'prod', certificate-authority-data",
        ),
        "CA data not text": (
            kubeconfig(tmp_path / "ca-binary", {"certificate-authority-data": b64(b"\x30\x82\xff\xfe")}),
            "cluster 'prod', certificate-authority-data",
        ),
        "CA file not UTF-8": (
            kubeconfig(tmp_path / "ca-file", {"certificate-authority": str(ca_file)}),
            "cluster 'prod', certificate-authority",
        ),
        "client key not PEM": (
            kubeconfig(
                tmp_path / "key-not-pem",
                user={"client-certificate-data": b64(CERT), "client-key-data": b64("not a key")},
            ),
            "user 'admin', client-certificate-data and client-key-data",
        ),
        "client key of another certificate": (
            kubeconfig(
                tmp_path / "key-mismatch",
                user={"client-certificate-data": b64(CERT), "client-key-data": b64(OTHER_KEY)},
            ),
            "user 'admin', client-certificate-data and client-key-data",
        ),
        "insecure flag a string": (
            kubeconfig(tmp_path / "insecure-string", {"insecure-skip-tls-verify": "false"}),
            "cluster 'prod', insecure-skip-tls-verify",
        ),
        "token not a string": (
            kubeconfig(tmp_path / "token-number", user={"token": 12345}),
            "user 'admin', token",
        ),
        "exec args not a list": (
            kubeconfig(tmp_path / "exec-args", user={"exec": {"command": "true", "args": 5}}),
            "`exec` has `args` or `env` that is not a list",
        ),
    }


CASES = [
    "not UTF-8",
    "CA data not PEM",
    "CA data not base64",
    "CA data not text",
    "CA file not UTF-8",
    "client key not PEM",
    "client key of another certificate",
    "insecure flag a string",
    "token not a string",
    "exec args not a list",
]


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_kubeconfig_is_a_configuration_error_naming_file_and_field(
    case: str, tmp_path: Path
) -> None:
    path, field = malformed(tmp_path)[case]
    with pytest.raises(KubeConfigError) as info:
        connect(path).close()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert str(path) in message and field in message, message
    for secret in ("t0ken-value", KEY.splitlines()[1], OTHER_KEY.splitlines()[1], b64(OTHER_KEY)[:40]):
        assert secret not in message + (info.value.hint or "")


def test_a_token_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe\x00")
    client = connect(kubeconfig(tmp_path / "config", user={"tokenFile": str(token)}))
    with pytest.raises(KubeConfigError, match=r"the token file .*token is not UTF-8 text"):
        client.connection.bearer_token()


def test_a_good_client_certificate_still_loads(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "good", user={"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}
    )
    client = connect(path)
    assert client.connection.auth_method == "client certificate"
    client.close()


@pytest.mark.parametrize("case", ["not UTF-8", "CA data not PEM", "client key of another certificate"])
def test_inspect_pod_with_a_malformed_kubeconfig_is_exit_2_in_one_line(case: str, tmp_path: Path) -> None:
    path, field = malformed(tmp_path)[case]
    env = clean_environ(HOME=str(tmp_path), PREFECT_HOME=str(tmp_path))
    done = run_cli("inspect", "--pod", "prod/etl", "--kubeconfig", str(path), env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: ") and str(path) in first and field in first, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


# -- any document at all ----------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.text(max_size=30),
    st.sampled_from([SERVER, "prod", "admin", "c", b64("x"), b64(CERT), "-----BEGIN CERTIFICATE-----"]),
)
_KEYS = st.sampled_from(
    [
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "token",
        "tokenFile",
        "username",
        "password",
        "client-certificate-data",
        "client-key-data",
        "client-certificate",
        "client-key",
        "auth-provider",
        "cluster",
        "user",
        "namespace",
        "name",
    ]
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=12,
)


_CLUSTER_KEYS = [
    "certificate-authority",
    "certificate-authority-data",
    "insecure-skip-tls-verify",
    "tls-server-name",
]
_USER_KEYS = [
    "token",
    "tokenFile",
    "username",
    "password",
    "client-certificate",
    "client-key",
    "client-certificate-data",
    "client-key-data",
    "auth-provider",
]
_PEM_LIKE = st.one_of(
    _VALUES, st.sampled_from([b64(CERT), b64(KEY), b64(OTHER_KEY), b64(CERT[:200]), CERT, "/dev/null"])
)
#: Mostly well-formed around the fields: a document that is garbage from the top is refused early.
_DOCUMENTS = st.fixed_dictionaries(
    {
        "current-context": st.sampled_from(["c", "c", "c", "", "other"]),
        "clusters": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.just("prod"),
                    "cluster": st.fixed_dictionaries(
                        {"server": st.one_of(st.just(SERVER), st.just(SERVER), _SCALARS)},
                        optional={key: _PEM_LIKE for key in _CLUSTER_KEYS},
                    ),
                }
            ),
            min_size=1,
            max_size=2,
        ),
        "users": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.just("admin"),
                    "user": st.fixed_dictionaries({}, optional={key: _PEM_LIKE for key in _USER_KEYS}),
                }
            ),
            min_size=1,
            max_size=2,
        ),
        "contexts": st.one_of(
            *[st.just([{"name": "c", "context": {"cluster": "prod", "user": "admin"}}])] * 4,
            st.lists(
                st.fixed_dictionaries({"name": st.just("c"), "context": st.dictionaries(_KEYS, _VALUES)}),
                max_size=2,
            ),
            _VALUES,
        ),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_DOCUMENTS, as_json=st.booleans())
def test_no_kubeconfig_document_crashes_the_connection(
    document: dict[str, Any], as_json: bool, tmp_path: Path
) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps(document) if as_json else yaml.safe_dump(document))
    try:
        connect(path).close()
    except KubeConfigError as exc:
        assert str(path) in str(exc) or "context" in str(exc) or "credential plugin" in str(exc), str(exc)
