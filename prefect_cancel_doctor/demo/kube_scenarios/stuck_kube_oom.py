"""Kubernetes scenario `kube_oom`: the flow's container is OOM-killed while the run is Cancelling.

The job's command is `python -m prefect.engine` (no Runner), so nothing acts on
the cancel; once `<ready_path>.grow` exists the flow allocates memory past the
container's limit and the kernel's OOM killer ends it (container status
`terminated`, reason `OOMKilled`). Expected verdict: `infrastructure_gone`,
naming OOMKilled.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-kube-oom")
def oom_flow(ready_path: str) -> None:
    """Sleep until told to grow, then grow until killed."""
    Path(ready_path).write_text("ready")
    grow = Path(ready_path + ".grow")
    while not grow.exists():
        time.sleep(0.2)  # demo: blocks here
    hoard = []
    while True:
        hoard.append(bytearray(64 * 2**20))
