"""Scenario `fifo`: the flow opens a FIFO that no process will ever open for writing.

`open()` of a FIFO for reading blocks in the kernel until a writer comes; the
Python frames only show `open`. A SIGTERM would interrupt it (PEP 475 runs the
handler on EINTR); the run stays in Cancelling because its worker died before
the cancel. The kernel says what the call waits on: the doctor names the FIFO
and that it has no writer. Expected verdict: `cancel_not_observed`, kind
`file_io`, resource `fifo`.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow


@flow(name="stuck-fifo")
def fifo_flow(ready_path: str) -> None:
    """Open a FIFO nobody writes to."""
    fifo = Path(ready_path).with_suffix(".fifo")
    if not fifo.exists():
        os.mkfifo(fifo)
    Path(ready_path).write_text("ready")
    with open(fifo) as incoming:  # demo: blocks here
        incoming.read()
