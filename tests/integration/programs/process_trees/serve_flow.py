"""Served with `flow.serve()`: the flow starts a child, then sleeps."""

import subprocess
import sys
import time
from pathlib import Path

from prefect import flow


@flow(name="tree-served")
def served_flow(ready_path: str) -> None:
    child = subprocess.Popen(["sleep", "3600"])
    Path(ready_path).write_text(str(child.pid))
    time.sleep(3600)  # demo: blocks here


if __name__ == "__main__":
    served_flow.serve(name=sys.argv[1])
