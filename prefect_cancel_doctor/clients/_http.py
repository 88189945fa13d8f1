"""httpx, imported without its command-line client (`from prefect_cancel_doctor.clients._http import httpx`),
and the bounds every request of the doctor keeps: a deadline and a cap on the answer's size.

`import httpx` imports its CLI, and with it click, pygments and rich.syntax,
when they are installed (they are, beside Prefect): about 40 ms of every
command's start-up, for code we never call (encode/httpx#3547, still open).
An empty placeholder for `httpx._main` makes httpx's own `except ImportError`
define a stub `httpx.main` instead; the placeholder is dropped afterwards, so
an explicit `import httpx._main` elsewhere still gets the real module.
"""

from __future__ import annotations

import ssl
import sys
import types
from typing import TypeVar

from prefect_cancel_doctor.core import deadline

if "httpx" not in sys.modules:
    _placeholder = types.ModuleType("httpx._main")
    sys.modules["httpx._main"] = _placeholder
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main") is _placeholder:
            del sys.modules["httpx._main"]
else:
    import httpx

# -- bounded requests: a deadline for the whole request, a cap on what is read ------------------

#: Answers larger than this are refused, unread (`PCD_MAX_RESPONSE_MB` sets another cap).
MAX_RESPONSE_ENV = "PCD_MAX_RESPONSE_MB"
DEFAULT_MAX_RESPONSE = 32 * 2**20


class BodyTooLarge(Exception):
    """An answer larger than the cap: refused after reading `limit` bytes of it at most."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit / 2**20:g} MiB")
        self.limit = limit


def max_response_bytes() -> int:
    """The cap on one answer: `PCD_MAX_RESPONSE_MB` MiB, else 32 MiB."""
    megabytes = deadline.env_number(MAX_RESPONSE_ENV, DEFAULT_MAX_RESPONSE / 2**20)
    return max(1, int(megabytes * 2**20))


def transport(
    *, verify: ssl.SSLContext | str | bool = True, uds: str | None = None, retries: int = 0
) -> httpx.HTTPTransport:
    """An `httpx.HTTPTransport` whose every connect, TLS handshake, read and write ends by the
    nearest deadline (the request's or the command's, `deadline`), not only by httpx's
    per-operation timeout."""
    from prefect_cancel_doctor.clients._bounded_net import bound

    made = httpx.HTTPTransport(verify=verify, uds=uds, retries=retries)
    # httpx has no public way to give its pool a network backend; should its shape change, the
    # deadline is still checked between the chunks of an answer (`fetch`), and
    # tests/api/test_deadlines.py fails.
    bound(getattr(made, "_pool", None))
    return made


def fetch(client: httpx.Client, request: httpx.Request, limit: int) -> httpx.Response:
    """Send `request` with `client` and read its answer: at most `limit` bytes (decoded), all of
    it before the nearest deadline. Raises `BodyTooLarge`, `deadline.DeadlinePassed` (also when
    a socket operation timed out at the deadline), or httpx's errors. The answer comes back read
    (`.content`, `.json()`); the connection is released."""
    try:
        response = client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        _at_deadline(exc)
        raise
    try:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(limit)
            deadline.check()
    except httpx.TimeoutException as exc:
        _at_deadline(exc)
        raise
    finally:
        response.close()
    # The body is decoded already: the copy must not claim an encoding, nor the encoded length.
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _FRAMING]
    read = httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(body),
        request=response.request,
        extensions=response.extensions,
    )
    read.read()
    return read


#: Headers that describe the body as it was sent, not as it was read.
_FRAMING = ("content-encoding", "content-length", "transfer-encoding")


def _at_deadline(exc: httpx.TimeoutException) -> None:
    """A socket operation that timed out at a deadline: raise that deadline instead."""
    passed = deadline.passed()
    if passed is not None:
        raise passed from exc


_Pooled = TypeVar("_Pooled", bound="PooledClient")


class PooledClient:
    """A client over one `httpx.Client` (`_http`): `close()` closes its pool, and so does leaving `with`."""

    _http: httpx.Client

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self: _Pooled) -> _Pooled:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "DEFAULT_MAX_RESPONSE",
    "MAX_RESPONSE_ENV",
    "BodyTooLarge",
    "PooledClient",
    "fetch",
    "httpx",
    "max_response_bytes",
    "transport",
]
