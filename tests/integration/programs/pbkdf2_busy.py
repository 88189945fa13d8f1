"""Main thread inside a long C call (a KDF) that never returns to the interpreter."""

import hashlib


def derive() -> bytes:
    print("ready", flush=True)
    return hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 2**31 - 1)  # BLOCK


derive()
