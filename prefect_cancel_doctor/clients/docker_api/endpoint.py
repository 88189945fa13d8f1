"""Where the Docker engine is: ``DOCKER_HOST`` (or the default socket), and its transport."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from prefect_cancel_doctor.clients._http import httpx
from prefect_cancel_doctor.clients._http import transport as bounded_transport
from prefect_cancel_doctor.clients.docker_api.errors import DockerConfigError
from prefect_cancel_doctor.core.inert import visible

#: Where the Docker engine listens when DOCKER_HOST is not set.
DEFAULT_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class DockerEndpoint:
    """How to reach a Docker engine."""

    #: As configured (``unix:///var/run/docker.sock``, ``tcp://10.0.0.5:2375``).
    url: str
    #: The base URL httpx talks to (``http://docker`` over a unix socket).
    base_url: str
    #: The unix socket, or None for TCP.
    socket_path: str | None = None
    #: TLS settings for ``tcp://`` with DOCKER_TLS_VERIFY: (ca, cert, key) file paths.
    tls_files: tuple[str, str, str] | None = None
    tls_verify: bool = True


def resolve_endpoint(
    docker_host: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> DockerEndpoint:
    """The engine to talk to: `docker_host`, else $DOCKER_HOST, else the default socket.

    Only the operator's configuration chooses it, never a run's data: an
    `infrastructure_pid` is written by whoever runs a deployment.
    """
    env = os.environ if environ is None else environ
    return _parse_host(docker_host or env.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}", env)


def recorded_remote_engine(infra_url: str | None, configured: DockerEndpoint) -> str | None:
    """The engine a run's `infrastructure_pid` names, when it is another host's (else None).

    prefect-docker records the Docker SDK's base URL: ``http+docker://localhost`` (the
    default socket), a unix socket, or a TCP engine. A loopback or the configured
    engine is this host's; anything else is where the run's container lives.
    """
    if not infra_url:
        return None
    try:
        parts = urlsplit(infra_url)
        host = parts.hostname
    except ValueError:
        return visible(infra_url, 200)
    if parts.scheme in ("http+docker", "http+unix", "unix", "npipe") or host in _LOOPBACK:
        return None
    if configured.base_url.startswith(("http://", "https://")):
        try:
            if urlsplit(configured.base_url).hostname == host:
                return None
        except ValueError:
            pass
    return visible(infra_url, 200)


_LOOPBACK = {"localhost", "127.0.0.1", "::1", None}


def _parse_host(url: str, env: Mapping[str, str]) -> DockerEndpoint:
    if url.startswith("/"):
        url = "unix://" + url
    scheme, _, rest = url.partition("://")
    if scheme == "unix":
        path = "/" + rest.lstrip("/")
        return DockerEndpoint(url=f"unix://{path}", base_url="http://docker", socket_path=path)
    if scheme in ("tcp", "http", "https"):
        hostport = rest.strip("/")
        tls = scheme == "https" or bool(env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_TLS"))
        if not tls:
            return DockerEndpoint(url=url, base_url=f"http://{hostport}")
        cert_dir = env.get("DOCKER_CERT_PATH") or str(Path.home() / ".docker")
        files = (f"{cert_dir}/ca.pem", f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem")
        return DockerEndpoint(
            url=url,
            base_url=f"https://{hostport}",
            tls_files=files if all(Path(f).is_file() for f in files) else None,
            tls_verify=bool(env.get("DOCKER_TLS_VERIFY")),
        )
    if scheme == "ssh":
        raise DockerConfigError(
            f"DOCKER_HOST={url} uses ssh://, which this client does not speak",
            hint=(
                "open an SSH tunnel to the engine's socket and point DOCKER_HOST at it, e.g. "
                "`ssh -NL 127.0.0.1:2375:/var/run/docker.sock user@host` then "
                "DOCKER_HOST=tcp://127.0.0.1:2375; or run prefect-cancel-doctor on the Docker host"
            ),
        )
    raise DockerConfigError(
        f"unsupported Docker engine address {url!r}",
        hint="use unix:///path/to/docker.sock or tcp://host:port in DOCKER_HOST",
    )


def engine_transport(endpoint: DockerEndpoint) -> httpx.BaseTransport:
    """The engine's transport; every socket operation ends by the command's deadline (`deadline`)."""
    if endpoint.socket_path is not None:
        return bounded_transport(uds=endpoint.socket_path)
    if endpoint.base_url.startswith("https://"):
        context = ssl.create_default_context()
        if endpoint.tls_files is not None:
            ca, cert, key = endpoint.tls_files
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
        if not endpoint.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return bounded_transport(verify=context)
    return bounded_transport()
