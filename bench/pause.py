"""Pause imposed on a target: how long one sample stops the stuck process, seen from inside it.

The target (bench/targets/stuck_flow.py --monitor --prefect) has the threads
and the memory maps (Prefect imported) of a flow engine, plus a monitor
thread that sleeps 0.2 ms in a loop and records every wake-up that comes
late, on CLOCK_MONOTONIC (the same clock as ours). Each sample the doctor
takes (`sample_process(..., samples=1)`: /proc, one `py-spy dump`, the merge)
is timed here; the pause it imposed is the lateness the monitor saw inside
that window. The baseline is the same measurement over windows of the same
length in which nothing samples the target (what the machine's scheduling
alone costs). Target: median ≤ 20 ms per sample, worst case reported; with
and without --native. The same is measured on one of 20 targets while all 20
are sampled together as `scan` does (5 samples each, --parallel 4, and 2:
the default on two cores, one dump a CPU), where the dumps compete for the cores.

    python -m bench.pause [--samples 40] [--fleet-runs 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Sequence

from bench._common import Row, log, print_table, read_json_line, stuck_processes
from prefect_cancel_doctor.model import ProcessSample, Role
from prefect_cancel_doctor.sample import SampleRequest, sample_many, sample_process

FLEET = 20
#: 4 was the default; 2 is the default now on the 2-core benchmark machine (one dump a CPU).
PARALLEL = (4, 2)


def _stall(gaps: Sequence[Sequence[float]], start: float, end: float, tick: float) -> float:
    """Total lateness of the monitor's wake-ups whose stall overlaps [start, end]."""
    total = 0.0
    for began, late in gaps:
        stalled_from, stalled_to = began + tick, began + tick + late
        if stalled_to >= start and stalled_from <= end:
            total += late
    return total


def measure(
    pid: int, child: subprocess.Popen[str], native: bool, samples: int, tick: float
) -> tuple[list[float], list[float]]:
    """Per-sample pauses and, for the same window lengths with no sampling, the idle lateness."""
    windows: list[tuple[float, float]] = []
    idle: list[tuple[float, float]] = []
    read_json_line(child, "report")  # clears what came before
    for _ in range(samples):
        started = time.monotonic()
        result = sample_process(pid, Role.ENGINE, samples=1, native=native, timeout=10)
        ended = time.monotonic()
        if len(result.dumps) != 1 or result.native != native:
            raise RuntimeError(f"sample failed: {result.errors}")
        windows.append((started, ended))
        time.sleep(0.03)
        quiet = time.monotonic()
        time.sleep(ended - started)
        idle.append((quiet, time.monotonic()))
        time.sleep(0.03)
    gaps = read_json_line(child, "report")
    assert isinstance(gaps, list)
    paused = [_stall(gaps, start, end, tick) * 1000 for start, end in windows]
    unsampled = [_stall(gaps, start, end, tick) * 1000 for start, end in idle]
    return paused, unsampled


def measure_in_fleet(
    monitored: subprocess.Popen[str], others: Sequence[int], native: bool, runs: int, parallel: int
) -> tuple[list[float], list[float]]:
    """Pauses of one target while it and `others` are sampled as `scan` does (5 samples each).

    Each dump stalls the target once, so the 5 largest stalls of a run are its 5 pauses;
    the baseline is the 5 largest over as long a time with nothing sampling.
    """
    pids = [monitored.pid, *others]
    requests = [
        SampleRequest(pid, Role.ENGINE, samples=5, interval=0.2, native=native, timeout=10) for pid in pids
    ]
    paused: list[float] = []
    unsampled: list[float] = []
    for _ in range(runs):
        read_json_line(monitored, "report")
        started = time.monotonic()
        results = sample_many(requests, max_workers=parallel)
        elapsed = time.monotonic() - started
        if not all(isinstance(r, ProcessSample) and len(r.dumps) == 5 for r in results):
            raise RuntimeError("a target was not sampled 5 times")
        paused += _largest(read_json_line(monitored, "report"), 5)
        time.sleep(elapsed)
        unsampled += _largest(read_json_line(monitored, "report"), 5)
    return paused, unsampled


def _largest(gaps: object, count: int) -> list[float]:
    assert isinstance(gaps, list)
    lateness = sorted((late * 1000 for _, late in gaps), reverse=True)
    return (lateness + [0.0] * count)[:count]


def _rows(label: str, paused: list[float], unsampled: list[float]) -> list[Row]:
    median = statistics.median(paused)
    return [
        Row(
            f"{label}, median",
            median,
            statistics.median(unsampled),
            "ms",
            "≤ 20 ms",
            median <= 20,
            "no sampling",
        ),
        Row(f"{label}, worst", max(paused), max(unsampled), "ms", "reported", None, "no sampling"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=40, help="samples per mode, one target")
    parser.add_argument(
        "--fleet-runs", type=int, default=4, help=f"sampling runs of {FLEET} targets per mode"
    )
    args = parser.parse_args()
    tick = 0.0002

    rows: list[Row] = []
    notes: list[str] = []
    with stuck_processes(1, args=["--monitor", "--prefect", "--tick", str(tick)]) as (child,):
        time.sleep(0.5)
        for native in (False, True):
            log(f"{args.samples} samples {'with' if native else 'without'} --native")
            paused, unsampled = measure(child.pid, child, native, args.samples, tick)
            mode = "`--native`" if native else "`--no-native`"
            rows += _rows(f"one target, every sample a {mode} dump", paused, unsampled)
            notes.append(
                f"One target, {mode}: pauses (ms) p10 {statistics.quantiles(paused, n=10)[0]:.1f}, "
                f"p90 {statistics.quantiles(paused, n=10)[-1]:.1f}, over {len(paused)} samples."
            )
        log(
            "one target sampled as `scan` does (5 samples; native only where a plain dump leaves the call "
            "unexplained)"
        )
        paused, unsampled = measure_in_fleet(child, [], True, args.samples // 5, 1)
        rows += _rows(
            "one target as `scan` samples it (5 samples; its call explained, so no native)", paused, unsampled
        )
        with stuck_processes(FLEET - 1) as others:
            for parallel in PARALLEL:
                for native in (False, True):
                    log(f"{FLEET} targets sampled together, --parallel {parallel}, native={native}")
                    paused, unsampled = measure_in_fleet(
                        child, [o.pid for o in others], native, args.fleet_runs, parallel
                    )
                    mode = "`--native`" if native else "`--no-native`"
                    label = f"1 of {FLEET} targets sampled together (--parallel {parallel}), {mode}"
                    rows += _rows(label, paused, unsampled)
    print_table("Pause imposed on the target by one sample (measured inside the target)", rows, notes)


if __name__ == "__main__":
    main()
