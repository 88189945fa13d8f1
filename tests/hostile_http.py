"""Real HTTP servers that misbehave on purpose, for the bounds every request of the doctor keeps.

- `DripServer`: accepts, reads the request, then drips its answer a byte at a time: the status
  line and headers at once and then the body (`body`), or the headers themselves (`headers`).
  Every byte comes well within any per-read timeout; only a deadline for the whole request ends it.
- `HugeServer`: answers every request with `size` bytes of JSON-looking text, with or without a
  Content-Length (chunked), generated as it is sent (the server holds no copy).

Both serve on 127.0.0.1 from daemon threads, as context managers; `url` is their base URL.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType


class _Server:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        #: Requests received so far (their first line).
        self.requests: list[str] = []

    def __enter__(self) -> _Server:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                self.requests.append(_read_request(connection))
                self.answer(connection)
            except OSError:
                pass

    def answer(self, connection: socket.socket) -> None:
        raise NotImplementedError


def _read_request(connection: socket.socket) -> str:
    """Read a whole request (headers, and a body by its Content-Length): closing a socket with
    unread input resets the connection, and the client would see that instead of the answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head.split(b"\r\n", 1)[0].decode(errors="replace")


class DripServer(_Server):
    """Drips its answer: one byte every `every` seconds, for as long as the client listens."""

    def __init__(self, mode: str = "body", every: float = 0.25) -> None:
        super().__init__()
        assert mode in ("body", "headers")
        self.mode, self.every = mode, every

    def answer(self, connection: socket.socket) -> None:
        if self.mode == "headers":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Drip: "
            connection.sendall(head)
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n["
            connection.sendall(head)
        while not self._stop.is_set():
            time.sleep(self.every)
            connection.sendall(b"a" if self.mode == "headers" else b" ")


class HugeServer(_Server):
    """Answers `size` bytes: a valid JSON list of small objects, generated while it is sent."""

    def __init__(self, size: int, *, chunked: bool = True, items: bool = False) -> None:
        super().__init__()
        self.size, self.chunked, self.items = size, chunked, items

    def answer(self, connection: socket.socket) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\n" if self.chunked else f"Content-Length: {self.size}\r\n"
        connection.sendall((head + "\r\n").encode())
        for piece in _json_list(self.size, self.items):
            if self._stop.is_set():
                return
            connection.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if self.chunked else piece)
        if self.chunked:
            connection.sendall(b"0\r\n\r\n")


def _json_list(size: int, items: bool = False) -> Iterator[bytes]:
    """`size` bytes of a JSON list of objects (`[{...}, ..., {"id": "x"}   ]`), in pieces of 64 KiB;
    with `items`, as a Kubernetes list: `{"items": [...]}`."""
    item = b'{"id": "00000000-0000-0000-0000-000000000000", "name": "x"},'
    last = b'{"id": "x"}'
    start, end = (b'{"items": [', b"]}") if items else (b"[", b"]")
    frame = len(start) + len(end) + len(last)
    count = max(0, (size - frame) // len(item))
    block = item * (65536 // len(item))
    yield start
    left = count * len(item)
    while left:
        piece = block[: min(left, len(block))]
        left -= len(piece)
        yield piece
    yield last + b" " * max(0, size - frame - count * len(item)) + end
