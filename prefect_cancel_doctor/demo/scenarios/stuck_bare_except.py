"""Scenario `bare_except`: a bare `except:` in a retry loop swallows the cancel, silently.

Prefect's SIGTERM handler raises `TerminationSignal`; the bare `except:` catches it and the loop
tries again, logging nothing. The harness kills the worker before its 30 s SIGKILL, so nothing
left says a SIGTERM came. Expected verdict: `signal_ignored` (absorbed by the `except:`, named
with its line; whether a SIGTERM came is unknown), kind `sleep`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow


@flow(name="stuck-bare-except")
def bare_except_flow(ready_path: str) -> None:
    """Fetch until it works."""
    Path(ready_path).write_text("ready")
    while True:
        try:
            fetch()
            break
        except:  # noqa: E722 - the bug this scenario stages
            continue


def fetch() -> None:
    """Wait for an answer that never comes."""
    time.sleep(3600)  # demo: blocks here
