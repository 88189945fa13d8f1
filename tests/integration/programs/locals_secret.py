"""Main thread sleeping with secret-looking locals in its frame."""

import time


def connect(password: str) -> None:
    api_key = "sk-live-123"
    monkey = "banana"
    dsn = "postgresql://etl:hunter2@db.internal:5432/warehouse"
    retries = 3
    print("ready", flush=True)
    time.sleep(3600)  # BLOCK
    print(api_key, monkey, dsn, retries)


connect("hunter2")
