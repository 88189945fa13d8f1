"""A thread-pool thread holds the GIL in a C loop (a regular expression that backtracks for hours)
while the main thread waits for its result: a SIGTERM's Python handler cannot run."""

import re
import signal
import sys
from concurrent.futures import ThreadPoolExecutor


def on_term(signum: int, frame: object) -> None:
    sys.exit(3)


def work() -> object:
    return re.match(r"(a+)+$", "a" * 40 + "b")  # blocks here


signal.signal(signal.SIGTERM, on_term)
with ThreadPoolExecutor(1) as pool:
    pool.submit(work).result()
