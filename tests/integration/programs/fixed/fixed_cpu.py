"""`cpu` fixed as advised: "bound the C call: ... split it into chunks that return to Python"."""

import hashlib
from pathlib import Path

from prefect import flow


@flow(name="fixed-cpu")
def fixed_cpu(ready_path: str) -> None:
    Path(ready_path).write_text("ready")
    for _ in range(10**9):
        hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 100_000)
