"""Scenario `network`: the flow waits on a socket that never answers.

A listener on 127.0.0.1 (started in a daemon thread of the flow process)
accepts the connection and never sends a byte; `recv` has no timeout. A
SIGTERM would interrupt `recv`; the run stays in Cancelling because its worker
died before the cancel. Expected verdict: `cancel_not_observed`, kind
`network_io`.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from prefect import flow


def _accept_and_stay_silent(listener: socket.socket, held: list[socket.socket]) -> None:
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # keep it open, never answer


@flow(name="stuck-network")
def network_flow(ready_path: str, port: int = 0) -> None:
    """Connect to a silent local server and wait for its first byte."""
    listener = socket.create_server(("127.0.0.1", port))
    held: list[socket.socket] = []
    threading.Thread(target=_accept_and_stay_silent, args=(listener, held), daemon=True).start()
    sock = socket.create_connection(listener.getsockname()[:2])
    Path(ready_path).write_text("ready")
    sock.recv(1)  # demo: blocks here
