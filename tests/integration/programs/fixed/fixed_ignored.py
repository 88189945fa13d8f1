"""`ignored` fixed as advised: "a custom handler must end the run (raise or call
sys.exit) or chain to the previous handler"."""

import signal
import time
from pathlib import Path

from prefect import flow


@flow(name="fixed-ignored")
def fixed_ignored(ready_path: str) -> None:
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):  # clean up, then let Prefect's handler end the run
        Path(ready_path).with_suffix(".cleaned").write_text("cleaned")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    Path(ready_path).write_text("ready")
    time.sleep(3600)
