"""How requests reach the API server: TLS as kubectl sets it up, and the credentials they carry."""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Generator, Iterator

from prefect_cancel_doctor.clients._http import httpx
from prefect_cancel_doctor.clients._http import transport as bounded_transport
from prefect_cancel_doctor.clients.kube_config import KubeConfigError, KubeConnection
from prefect_cancel_doctor.core.redact import hold


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


def api_transport(connection: KubeConnection) -> httpx.BaseTransport:
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


def auth(connection: KubeConnection) -> httpx.Auth | None:
    if connection.token or connection.token_file:
        return _BearerAuth(connection)
    if connection.username:
        return httpx.BasicAuth(connection.username, connection.password or "")
    return None
