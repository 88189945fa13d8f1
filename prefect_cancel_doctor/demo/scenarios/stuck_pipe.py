"""Scenario `pipe`: the flow reads the output of a child that never writes.

`subprocess.Popen(["sleep", "3600"], stdout=PIPE).stdout.read()` waits in
`read()` on a pipe whose only writer is the sleeping child. A SIGTERM would
interrupt the read; the run stays in Cancelling because its worker died before
the cancel. The doctor names the pipe and the process on its other end.
Expected verdict: `cancel_not_observed`, kind `file_io`, resource `pipe`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import flow


@flow(name="stuck-pipe")
def pipe_flow(ready_path: str) -> None:
    """Read everything a sleeping child writes."""
    child = subprocess.Popen(["sleep", "3600"], stdout=subprocess.PIPE)
    assert child.stdout is not None
    Path(ready_path).write_text("ready")
    child.stdout.read()  # demo: blocks here
