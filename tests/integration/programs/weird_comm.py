"""Names the main thread and a worker thread with spaces and parentheses, then sleeps."""

import ctypes
import threading
import time

PR_SET_NAME = 15
libc = ctypes.CDLL(None)


def set_name(name: bytes) -> None:
    libc.prctl(PR_SET_NAME, name, 0, 0, 0)


def worker(started: threading.Event) -> None:
    set_name(b"w (1) x")
    started.set()
    time.sleep(3600)


started = threading.Event()
threading.Thread(target=worker, args=(started,), daemon=True).start()
started.wait()
set_name(b"flow) (run 7")
print("ready", flush=True)
time.sleep(3600)  # BLOCK
