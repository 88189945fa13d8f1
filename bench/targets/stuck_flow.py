"""A stand-in for a Prefect flow process stuck in a blocking call, for the benchmarks.

It has the shape of a flow engine that py-spy has to walk: the main thread
`--depth` Python frames deep in a blocking call, an idle asyncio event-loop
thread (Prefect's run_coro_as_sync loop) and `--threads` worker threads
waiting on a queue (a task runner's pool); with `--prefect` it imports
Prefect first, for the memory maps of a real flow process. It prints "ready"
once every thread is in place.

With `--monitor`, the main thread blocks in `readline()` on stdin instead of
`time.sleep`, and one more thread measures how long the process is stopped:
it sleeps `--tick` seconds in a loop and records every wake-up that comes
more than 1 ms later than asked (start time, CLOCK_MONOTONIC, and the lateness).
Each line "report" on stdin prints those gaps as one JSON line and clears them;
end of input exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import sys
import threading
import time

_gaps: list[tuple[float, float]] = []
_gaps_lock = threading.Lock()


def monitor(tick: float) -> None:
    """Record every wake-up more than 1 ms late: (when the sleep began, how late)."""
    while True:
        before = time.monotonic()
        time.sleep(tick)
        late = time.monotonic() - before - tick
        if late > 0.001:
            with _gaps_lock:
                _gaps.append((before, late))


def serve_reports() -> None:
    for line in sys.stdin:
        if line.strip() == "report":
            with _gaps_lock:
                gaps = list(_gaps)
                _gaps.clear()
            print(json.dumps(gaps), flush=True)


def descend(depth: int, blocked: bool) -> None:
    if depth > 0:
        descend(depth - 1, blocked)
        return
    print("ready", flush=True)
    if blocked:
        serve_reports()
    else:
        time.sleep(365 * 86400)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--monitor", action="store_true")
    parser.add_argument("--tick", type=float, default=0.0002)
    parser.add_argument(
        "--prefect",
        action="store_true",
        help="import prefect first: the address space of a real flow process",
    )
    # Words to show in the command line, e.g. "prefect.engine" to look like a flow engine.
    parser.add_argument("label", nargs="*")
    args = parser.parse_args()
    if args.prefect:
        import prefect  # noqa: F401  # some 300 memory maps, as in a flow engine

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="event-loop", daemon=True).start()
    work: queue.Queue[object] = queue.Queue()
    for index in range(args.threads):
        threading.Thread(target=work.get, name=f"task-worker-{index}", daemon=True).start()
    if args.monitor:
        threading.Thread(target=monitor, args=(args.tick,), name="gap-monitor", daemon=True).start()
    descend(args.depth, args.monitor)


if __name__ == "__main__":
    main()
