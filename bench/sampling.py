"""Sampling many targets: 1, 10 and 20 stuck processes x 5 samples, wall time.

The targets are bench/targets/stuck_flow.py processes (the threads of a flow
engine, the main thread 30 frames deep in a sleep). Taking turns:

- ours: `sample_many` as `scan` called it before the default became one
  dump a CPU (`--samples 5 --interval 0.2 --native --parallel 4`: rounds of
  one dump per target, 4 at a time);
- the baseline: `py-spy dump --json --native` run 5 times per target, one
  after the other, nothing else (no /proc, no interval);
- the previous design, for reference: each process sampled in its own loop
  (5 dumps, 0.2 s apart), 4 processes at a time;
- ours with `--no-native`, and with `--parallel 2` (one dump a CPU here: the
  default on this machine).

Target: 20 targets x 5 samples in ≤ 3 s wall on 2 cores.

    python -m bench.sampling [--repeat 3] [--counts 1,10,20]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from bench._common import Row, alternate, log, median, print_table, ratio_row, stuck_processes
from prefect_cancel_doctor.model import ProcessSample, Role
from prefect_cancel_doctor.sample import SampleRequest, SamplerError, sample_many
from prefect_cancel_doctor.sample.pyspy import find_py_spy

SAMPLES = 5
INTERVAL = 0.2
PARALLEL = 4


def _requests(pids: Sequence[int], native: bool = True) -> list[SampleRequest]:
    return [
        SampleRequest(pid, Role.ENGINE, samples=SAMPLES, interval=INTERVAL, native=native, timeout=10)
        for pid in pids
    ]


def _check(results: Sequence[ProcessSample | SamplerError]) -> None:
    for result in results:
        if not isinstance(result, ProcessSample) or len(result.dumps) != SAMPLES or result.errors:
            raise RuntimeError(f"a target was not sampled {SAMPLES} times: {result!r}"[:500])


def ours(
    pids: Sequence[int], native: bool = True, parallel: int = PARALLEL, cpu: list[float] | None = None
) -> Callable[[], None]:
    """`sample_many` as the scan runs it; appends to `cpu` the CPU seconds it took (ours and py-spy's)."""
    requests = _requests(pids, native)

    def run() -> None:
        before = _cpu_seconds()
        _check(sample_many(requests, max_workers=parallel))
        if cpu is not None:
            cpu.append(_cpu_seconds() - before)

    return run


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its waited-for children (the py-spy processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def previous_design(pids: Sequence[int]) -> Callable[[], None]:
    """One loop per process (dump, sleep, dump ...) over 4 threads: the sampler before rounds."""
    requests = _requests(pids)

    def run() -> None:
        with ThreadPoolExecutor(PARALLEL) as pool:
            _check(list(pool.map(lambda request: sample_many([request], max_workers=1)[0], requests)))

    return run


def sequential_py_spy(pids: Sequence[int]) -> Callable[[], None]:
    py_spy = find_py_spy()

    def run() -> None:
        for pid in pids:
            for _ in range(SAMPLES):
                subprocess.run(
                    [py_spy, "dump", "--pid", str(pid), "--json", "--native"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--counts", default="1,10,20")
    args = parser.parse_args()

    rows: list[Row] = []
    for count in (int(c) for c in args.counts.split(",")):
        with stuck_processes(count) as children:
            pids = [child.pid for child in children]
            cpu: list[float] = []
            log(f"{count} targets x {SAMPLES} samples: 5 ways x {args.repeat} runs, taking turns")
            times = alternate(
                {
                    "ours": ours(pids, cpu=cpu),
                    "sequential": sequential_py_spy(pids),
                    "previous": previous_design(pids),
                    "ours plain": ours(pids, native=False),
                    "ours 2": ours(pids, parallel=2),
                },
                repeat=args.repeat,
            )
        m = {name: median(values) for name, values in times.items()}
        label = f"{count} target{'s' if count > 1 else ''} x {SAMPLES} samples"
        target_met = m["ours"] <= 3.0 if count == 20 else None
        rows.append(
            Row(
                f"{label}, `--native`",
                m["ours"],
                m["sequential"],
                "s",
                "≤ 3 s" if count == 20 else "",
                target_met,
                "`py-spy dump --native`, sequential",
            )
        )
        cores = os.cpu_count() or 1
        if count == 20:
            cpu_bound = median(cpu[-args.repeat :]) / cores
            rows.append(
                Row(
                    f"{label}, `--native`: CPU (ours + py-spy) / {cores} cores",
                    cpu_bound,
                    None,
                    "s",
                    "≤ 3 s",
                    cpu_bound <= 3.0,
                )
            )
        rows.append(ratio_row(f"{label}, `--no-native`", m["ours plain"], m["sequential"], "s", None, "same"))
        rows.append(
            ratio_row(f"{label}, `--native --parallel 2`", m["ours 2"], m["sequential"], "s", None, "same")
        )
        rows.append(ratio_row(f"{label}, previous design", m["previous"], m["sequential"], "s", None, "same"))
    print_table(
        f"Sampling many targets (median of {args.repeat} alternating runs; "
        f"--samples {SAMPLES} --interval {INTERVAL} --parallel {PARALLEL})",
        rows,
        [
            "Ours includes what py-spy alone does not: /proc read before every dump, the merge "
            f"with the kernel's view, and {INTERVAL} s between two dumps of one process.",
            "The CPU row (20 targets) is the wall time the same work needs on this many otherwise idle "
            "cores: it does not move with the load other programs put on the machine; the wall time does.",
        ],
    )


if __name__ == "__main__":
    main()
