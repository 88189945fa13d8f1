"""The main thread waits on a thread-pool future whose task sleeps (a flow awaiting a
`.submit()`ted task of the ThreadPoolTaskRunner); nothing has signalled it."""

import time
from concurrent.futures import ThreadPoolExecutor


def task() -> None:
    print("ready", flush=True)
    time.sleep(3600)  # BLOCK


with ThreadPoolExecutor(max_workers=1) as pool:
    pool.submit(task).result()  # WAIT
