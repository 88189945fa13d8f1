"""httpcore's network backend with every socket operation cut to the nearest deadline.

httpcore passes each read, write, connect and TLS handshake the timeout of its phase
(httpx's per-operation `Timeout`); here each one waits at most until the request's or the
command's deadline (`deadline.clamp`), so a server that drips its answer, or its headers,
ends at the deadline and not a read timeout after the last byte it sent. Imported only when
a transport is built (`_http.transport`): `import httpcore` loads anyio.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

from prefect_cancel_doctor.core import deadline


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    """`deadline.clamp`, a passed deadline raised as httpcore's timeout of the operation (httpx
    maps it to its own, so every client of the doctor's handles it as a time-out; `_http.fetch`
    tells it apart)."""
    try:
        return deadline.clamp(timeout)
    except deadline.DeadlinePassed as exc:
        raise error(str(exc)) from exc


class BoundedStream(httpcore.NetworkStream):
    """A connection whose reads and writes end by the nearest deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _clamp(timeout, httpcore.ConnectTimeout)
        return BoundedStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class BoundedBackend(httpcore.NetworkBackend):
    """Connects with the inner backend, within the nearest deadline, and bounds the connection."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return BoundedStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _clamp(timeout, httpcore.ConnectTimeout)
        return BoundedStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        left = deadline.remaining()
        self._inner.sleep(seconds if left is None else max(0.0, min(seconds, left)))


def bound(pool: Any) -> bool:
    """Put `BoundedBackend` under an httpcore connection pool (httpx.HTTPTransport's `_pool`)
    before its first connection; False when the pool does not have the expected shape."""
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.NetworkBackend):
        return False
    if not isinstance(inner, BoundedBackend):
        pool._network_backend = BoundedBackend(inner)
    return True
