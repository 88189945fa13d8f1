"""What `watch` costs per refresh, per run watched: CPU as a share of one core, the pause, requests.

Real runs stuck in Cancelling on a local server (the demo's scenarios `sleep`, `network`,
`lock` and `swallowed`: four flow processes) and one more run whose process is the pause
monitor of `bench.pause` (bench/targets/stuck_flow.py --monitor --prefect, carrying the run's
PREFECT__FLOW_RUN_ID), watched as `watch` does (`act.watch.refresher`, `watch`'s options).
Taking turns in the same run:

- `watch`'s refresh; the same with one py-spy dump at a time (`--parallel 1`); and a full
  `engine.scan` with `watch`'s options (what each refresh was before it kept what had not
  changed);
- the floor: py-spy alone dumping the same processes once each (`py-spy dump --pid`, one
  after another) and the bare API listing (one httpx request for the runs in Cancelling).

CPU is the benchmark process's and its children's (py-spy): per run per refresh, as a %
of one core at the default `--every` (CPU seconds per refresh / runs / interval). The pause
of a refresh is the longest stall the monitor target saw while it ran (a plain dump stops
it once; `bench.pause._largest`), the floor's that of its one plain dump.

    python -m bench.watch [--refreshes 10] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import resource
import statistics
import subprocess
import time
from collections.abc import Callable

import httpx

from bench._common import Row, log, print_table, read_json_line, stuck_processes
from bench.pause import _largest
from prefect_cancel_doctor.act.watch import refresher
from prefect_cancel_doctor.cli.options import scan_options
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import resolve_connection
from prefect_cancel_doctor.demo.environment import run_demo_environment
from prefect_cancel_doctor.model import Report
from prefect_cancel_doctor.sample.pyspy import find_py_spy
from prefect_cancel_doctor.scan.engine import scan

SCENARIOS = ["lock", "network", "sleep", "swallowed"]
#: `watch --every`'s default (cli/act.py).
EVERY = 5.0
TICK = 0.0002
#: issue 26's row for `watch`
CPU_TARGET = 1.0
PAUSE_TARGET = 5.0
WITH_API = ("watch", "watch, one dump at a time", "scan")


def _cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _monitored_run(api_url: str) -> str:
    """A run in Cancelling, with no pool; its id."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        flow = client.post("/flows/", json={"name": "pcd-bench-watch-monitor"}).raise_for_status().json()
        run = client.post(
            "/flow_runs/",
            json={
                "flow_id": flow["id"],
                "name": "pcd-bench-monitor",
                "state": {"type": "CANCELLING", "name": "Cancelling"},
            },
        ).raise_for_status()
        run_id: str = run.json()["id"]
    return run_id


def _set_pid(api_url: str, run_id: str, pid: int) -> None:
    with httpx.Client(base_url=api_url, timeout=30) as client:
        client.patch(f"/flow_runs/{run_id}", json={"infrastructure_pid": str(pid)}).raise_for_status()


def _listing(api_url: str) -> Callable[[], None]:
    client = httpx.Client(base_url=api_url, timeout=30)
    body = {"flow_runs": {"state": {"type": {"any_": ["CANCELLING"]}}}, "limit": 200}

    def read() -> None:
        client.post("/flow_runs/filter", json=body).raise_for_status()

    return read


def _dumps(py_spy: str, pids: list[int]) -> Callable[[], None]:
    def dump() -> None:
        for pid in pids:
            subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, check=True)

    return dump


class _Turns:
    """Each contestant's wall time, CPU and the pause the monitor saw, per call, taking turns."""

    def __init__(self, monitor: subprocess.Popen[str]) -> None:
        self.monitor = monitor
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.pause: dict[str, list[float]] = {}
        self.requests: dict[str, list[int]] = {}

    def time(self, name: str, call: Callable[[], object], api: PrefectApi | None = None) -> None:
        read_json_line(self.monitor, "report")  # clears what came before
        started, cpu, sent = time.monotonic(), _cpu(), api.requests if api else 0
        call()
        ended = time.monotonic()
        self.cpu.setdefault(name, []).append(_cpu() - cpu)
        self.wall.setdefault(name, []).append(ended - started)
        self.requests.setdefault(name, []).append(api.requests - sent if api else 0)
        # One plain dump stops the target once: a refresh's pause is the longest stall in it.
        self.pause.setdefault(name, []).append(_largest(read_json_line(self.monitor, "report"), 1)[0])


def _processes(report: Report) -> list[int]:
    return sorted({p.pid for d in report.runs if d.target for p in d.target.processes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=10)
    parser.add_argument("--profile", help="write a cProfile of `watch`'s refreshes to this file")
    args = parser.parse_args()
    options = scan_options(1, 0.0, False, False, None, 10.0)  # as `watch` does (cli/act.py)
    with run_demo_environment(SCENARIOS, log) as staged:
        api_url = staged.harness.api_url
        run_id = _monitored_run(api_url)
        env = {"PREFECT__FLOW_RUN_ID": run_id}
        targs = ["--monitor", "--prefect", "--tick", str(TICK)]
        with (
            stuck_processes(1, envs=[env], args=targs) as (monitor,),
            PrefectApi(resolve_connection(api_url)) as api,
        ):
            _set_pid(api_url, run_id, monitor.pid)
            time.sleep(0.5)
            refresh = refresher(api, options, [])
            serial = refresher(api, dataclasses.replace(options, parallel=1), [])
            report = refresh()  # warm-up: imports, connections
            serial()
            processes = _processes(report)
            runs = len(report.runs)
            if monitor.pid not in processes:
                raise RuntimeError(
                    f"the monitor {monitor.pid} is not among the watched processes {processes}"
                )
            log(f"{runs} runs, processes {processes}: {args.refreshes} turns")
            turns = _Turns(monitor)
            contestants: dict[str, Callable[[], object]] = {
                "watch": refresh,
                "watch, one dump at a time": serial,
                "scan": lambda: scan(api, options),
                "py-spy": _dumps(find_py_spy(), processes),
                "listing": _listing(api_url),
                "py-spy, monitor only": _dumps(find_py_spy(), [monitor.pid]),
                # nothing sampling the monitor for as long as a refresh takes: the machine's own stalls
                "idle": lambda: time.sleep(turns.wall["watch"][-1]),
            }
            profile = cProfile.Profile() if args.profile else None
            for index in range(args.refreshes):
                for name, call in contestants.items():
                    if name == "watch" and profile is not None:
                        profile.enable()
                    turns.time(name, call, api if name in WITH_API else None)
                    if name == "watch" and profile is not None:
                        profile.disable()
                    time.sleep(0.2)
                if index % 5 == 4:
                    log(f"{index + 1} turns")
            last = refresh()
            verdicts = sorted(
                (d.flow_run.name if d.flow_run else "", d.verdict.cause.value) for d in last.runs
            )
            full = sorted(
                (d.flow_run.name if d.flow_run else "", d.verdict.cause.value)
                for d in scan(api, options).runs
            )
            if profile is not None:
                profile.dump_stats(args.profile)
    print_table(
        f"watch: {args.refreshes} refreshes",
        _rows(turns, runs),
        _notes(turns, runs, processes, verdicts, full),
    )


def _share(cpu: float, runs: int) -> float:
    """CPU seconds of one refresh as a % of one core, per run, at `EVERY`."""
    return cpu / runs / EVERY * 100


def _rows(turns: _Turns, runs: int) -> list[Row]:
    floor = [a + b for a, b in zip(turns.cpu["py-spy"], turns.cpu["listing"], strict=True)]
    floor_share = _share(statistics.median(floor), runs)
    rows = []
    labels = {
        "watch": "`watch` refresh",
        "watch, one dump at a time": "`watch` refresh, `--parallel 1`",
        "scan": "a full `scan` (the refresh before)",
    }
    for name, label in labels.items():
        share = _share(statistics.median(turns.cpu[name]), runs)
        worst = _share(max(turns.cpu[name]), runs)
        rows += [
            Row(
                f"{label}: CPU per run per refresh, % of a core at --every {EVERY:g}, median",
                share,
                floor_share,
                "%",
                f"≤ {CPU_TARGET:g} %",
                share <= CPU_TARGET,
                "py-spy dumps + listing",
            ),
            Row(
                f"{label}: … worst", worst, _share(max(floor), runs), "%", "", None, "py-spy dumps + listing"
            ),
            Row(
                f"{label}: CPU per refresh, median",
                statistics.median(turns.cpu[name]) * 1000,
                statistics.median(floor) * 1000,
                "ms",
                "",
                None,
                "py-spy dumps + listing",
            ),
            Row(
                f"{label}: wall time per refresh, median",
                statistics.median(turns.wall[name]) * 1000,
                statistics.median(
                    [a + b for a, b in zip(turns.wall["py-spy"], turns.wall["listing"], strict=True)]
                )
                * 1000,
                "ms",
                "",
                None,
                "py-spy dumps + listing",
            ),
            Row(
                f"{label}: pause of the monitored run per refresh, median",
                statistics.median(turns.pause[name]),
                statistics.median(turns.pause["py-spy, monitor only"]),
                "ms",
                "",
                None,
                "one plain py-spy dump",
            ),
            Row(
                f"{label}: … worst",
                max(turns.pause[name]),
                max(turns.pause["py-spy, monitor only"]),
                "ms",
                f"≤ {PAUSE_TARGET:g} ms",
                max(turns.pause[name]) <= PAUSE_TARGET,
                "one plain py-spy dump",
            ),
        ]
    return rows


def _notes(
    turns: _Turns,
    runs: int,
    processes: list[int],
    verdicts: list[tuple[str, str]],
    full: list[tuple[str, str]],
) -> list[str]:
    return [
        f"{runs} runs, {len(processes)} processes; `watch`'s options as cli/act.py sets them; medians of "
        f"{len(turns.cpu['watch'])} turns (watch, watch one dump at a time, scan, py-spy, listing, idle, "
        "taking turns).",
        f"Floor parts, CPU median: py-spy dumps {statistics.median(turns.cpu['py-spy']) * 1000:.1f} ms, "
        f"listing {statistics.median(turns.cpu['listing']) * 1000:.1f} ms. The monitor's longest stall "
        f"with nothing sampling it, as long as a refresh: "
        f"median {statistics.median(turns.pause['idle']):.1f} "
        f"ms, worst {max(turns.pause['idle']):.1f} ms (the machine's own scheduling).",
        "API requests per refresh, median (worst): "
        + ", ".join(
            f"{name} {statistics.median(turns.requests[name]):g} ({max(turns.requests[name])})"
            for name in ("watch", "watch, one dump at a time", "scan")
        ),
        f"Verdicts of the last refresh {'equal' if verdicts == full else 'DIFFER from'} a full scan's: "
        f"{verdicts}" + ("" if verdicts == full else f" vs {full}"),
    ]


if __name__ == "__main__":
    main()
