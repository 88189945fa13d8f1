"""Main thread blocked in time.sleep."""

import time


def wait_forever() -> None:
    print("ready", flush=True)
    time.sleep(3600)  # BLOCK


wait_forever()
