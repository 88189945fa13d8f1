"""A non-daemon thread sleeps; the main thread has finished the script and waits for it."""

import threading
import time


def work() -> None:
    print("ready", flush=True)
    time.sleep(3600)  # BLOCK


threading.Thread(target=work, name="uploader").start()
