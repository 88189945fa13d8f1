"""Scenario `cpu`: a key derivation that runs for hours inside one C call.

`hashlib.pbkdf2_hmac` does not return to the interpreter until it is done, so
Prefect's SIGTERM handler stays pending. The harness lets the worker send
SIGTERM and kills the worker before its 30 s SIGKILL. The process lowers its
own priority so that the demo does not starve a small machine. Expected
verdict: `signal_pending`, kind `cpu`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from prefect import flow

#: OpenSSL's largest iteration count (about 7 minutes of SHA-256 per block) ...
ROUNDS = 2**31 - 1
#: ... repeated for each 32-byte block of a long key, inside the same C call.
KEY_LEN = 32 * 1024


@flow(name="stuck-cpu")
def cpu_flow(ready_path: str) -> None:
    """Derive a key that takes days to compute."""
    os.nice(19)
    Path(ready_path).write_text("ready")
    hashlib.pbkdf2_hmac("sha256", b"x", b"salt", ROUNDS, KEY_LEN)  # demo: blocks here
