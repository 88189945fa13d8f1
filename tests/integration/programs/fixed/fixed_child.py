"""`child` fixed as advised: "terminate child processes in a finally block"."""

import subprocess
import sys
import time
from pathlib import Path

from prefect import flow


@flow(name="fixed-child")
def fixed_child(ready_path: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
    Path(ready_path).with_suffix(".child").write_text(str(child.pid))
    Path(ready_path).write_text("ready")
    try:
        time.sleep(3600)
    finally:
        child.terminate()
        child.wait(10)
