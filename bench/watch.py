"""What `watch` costs per refresh: wall time, the doctor's CPU (py-spy included), requests.

Real runs stuck in Cancelling on a local server (the demo's scenarios `sleep`, `network`,
`lock` and `swallowed`: four flow processes), watched as `watch` does: each refresh is
`engine.scan` with one plain (non-native) py-spy dump per process. The pause a refresh
imposes on each target is that of one plain dump, measured by `python -m bench.pause`
(its "plain, 1 target" row).

    python -m bench.watch [--refreshes 10]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from bench._common import Row, log, print_table
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import resolve_connection
from prefect_cancel_doctor.demo.environment import run_demo_environment
from prefect_cancel_doctor.scan.engine import Options, scan

SCENARIOS = ["lock", "network", "sleep", "swallowed"]


def _cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=10)
    args = parser.parse_args()
    options = Options(samples=1, interval=0.0, native=False)
    with run_demo_environment(SCENARIOS, log) as staged:
        walls, cpus = [], []
        with PrefectApi(resolve_connection(staged.harness.api_url)) as api:
            scan(api, options)  # warm-up: imports, connections
            for _ in range(args.refreshes):
                started, cpu = time.perf_counter(), _cpu()
                report = scan(api, options)
                walls.append(time.perf_counter() - started)
                cpus.append(_cpu() - cpu)
        runs = len(report.runs)
        processes = sum(len(d.target.processes) if d.target else 0 for d in report.runs)
    rows = [
        Row("wall time per refresh, median (ms)", statistics.median(walls) * 1000, None, "ms"),
        Row("wall time per refresh, worst (ms)", max(walls) * 1000, None, "ms"),
        Row("CPU per refresh (doctor + py-spy), median (ms)", statistics.median(cpus) * 1000, None, "ms"),
        Row("CPU per refresh (doctor + py-spy), worst (ms)", max(cpus) * 1000, None, "ms"),
    ]
    notes = [
        f"{runs} runs, {processes} processes sampled per refresh",
        "the pause a refresh imposes on a target is one plain dump's: see `python -m bench.pause`",
    ]
    print_table(f"watch: {args.refreshes} refreshes", rows, notes)


if __name__ == "__main__":
    main()
