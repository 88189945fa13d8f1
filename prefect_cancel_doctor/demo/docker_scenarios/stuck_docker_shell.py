"""Docker scenario `docker_shell_pid1`: a shell as PID 1 drops `docker stop`'s SIGTERM.

The deployment sets `command: sh -c 'python -m prefect.engine; echo done'`: the
shell is PID 1 (it cannot `exec` the engine, a command follows it) and the
engine is its child. PID 1 of a PID namespace gets no signal it has no handler
for, and dash catches only SIGINT and SIGCHLD: the SIGTERM that `docker stop`
sends is dropped and never forwarded. Expected verdict: `pid1_no_forward`,
kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-docker-shell")
def shell_flow(ready_path: str) -> None:
    """Sleep for an hour under a shell."""
    Path(ready_path).write_text("ready")
    time.sleep(3600)  # demo: blocks here
