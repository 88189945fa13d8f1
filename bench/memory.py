"""Memory: peak RSS of `prefect-cancel-doctor scan` on the 50,000-run server, and with 20 targets to sample.

1. A quiet server on a copy of the seeded 50,000-run database (500 runs in
   Cancelling, see bench/seed.py): `prefect-cancel-doctor scan --format json`
   against `prefect flow-run ls --state-type CANCELLING --limit 200`.
2. An empty server with 20 runs in Cancelling, each with a live stand-in flow
   process here (bench/targets/stuck_flow.py, carrying the run's
   PREFECT__FLOW_RUN_ID and `infrastructure_pid`): `scan` samples all 20 with
   the defaults (5 samples, --native, --parallel = CPUs, at most 4); against one
   `py-spy dump --native` of one of them.

The figure is the peak RSS (VmHWM) of the doctor's own process; the peak sum
over its process tree (with the py-spy processes running at that moment) is
shown alongside. Target: ≤ 80 MB.

    python -m bench.memory [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
from collections.abc import Iterator

import httpx

from bench._common import (
    DOCTOR,
    PREFECT,
    Peak,
    Row,
    client_env,
    local_server,
    log,
    peak_memory,
    print_table,
    stuck_processes,
)
from bench.seed import serve
from prefect_cancel_doctor.demo.harness import LocalPrefect
from prefect_cancel_doctor.sample.pyspy import find_py_spy

TARGETS = 20


@contextlib.contextmanager
def stuck_runs(prefect: LocalPrefect, count: int) -> Iterator[list[int]]:
    """`count` runs in CANCELLING, each with a live stand-in flow process on this host."""
    with httpx.Client(base_url=prefect.api_url + "/", timeout=60) as http:

        def call(method: str, path: str, body: object) -> dict[str, object]:
            response = http.request(method, path, json=body)
            response.raise_for_status()
            return dict(response.json()) if response.content else {}

        flow = call("POST", "flows/", {"name": "bench-stuck"})["id"]
        runs = [
            str(
                call(
                    "POST", "flow_runs/", {"flow_id": flow, "state": {"type": "RUNNING", "name": "Running"}}
                )["id"]
            )
            for _ in range(count)
        ]
        envs = [{"PREFECT__FLOW_RUN_ID": run} for run in runs]
        with stuck_processes(count, envs=envs, args=["prefect.engine"]) as children:
            for run, child in zip(runs, children, strict=True):
                call(
                    "PATCH", f"flow_runs/{run}", {"infrastructure_pid": f"{socket.gethostname()}:{child.pid}"}
                )
                result = call("POST", f"flow_runs/{run}/set_state", {"state": {"type": "CANCELLING"}})
                if result.get("status") != "ACCEPT":
                    raise RuntimeError(f"CANCELLING refused: {result}")
            yield [child.pid for child in children]


def _repeat(argv: list[str], env: dict[str, str], repeat: int, ok: tuple[int, ...]) -> list[Peak]:
    return [peak_memory(argv, env, ok=ok) for _ in range(repeat)]


def _rows(what: str, ours: list[Peak], baseline: list[Peak], baseline_name: str) -> list[Row]:
    own = max(p.own_mb for p in ours)
    base = max(p.own_mb for p in baseline)
    return [
        Row(f"{what}: peak RSS of the doctor", own, base, "MB", "≤ 80 MB", own <= 80, baseline_name),
        Row(
            f"{what}: peak RSS of its process tree",
            max(p.tree_mb for p in ours),
            max(p.tree_mb for p in baseline),
            "MB",
            "reported",
            None,
            baseline_name,
        ),
        Row(
            f"{what}: wall time (median)",
            statistics.median(p.seconds for p in ours),
            statistics.median(p.seconds for p in baseline),
            "s",
            "",
            None,
            baseline_name,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rows: list[Row] = []
    with serve(50_000) as prefect:
        env = client_env(prefect)
        log(f"scan of the 50,000-run server x {args.repeat}")
        ours = _repeat([DOCTOR, "scan", "--format", "json"], env, args.repeat, (1,))
        base = _repeat(
            [PREFECT, "flow-run", "ls", "--state-type", "CANCELLING", "--limit", "200"],
            env,
            args.repeat,
            (0,),
        )
        rows += _rows("scan, 50,000 runs (500 cancelling)", ours, base, "`prefect flow-run ls`")
    with local_server() as prefect, stuck_runs(prefect, TARGETS) as pids:
        env = client_env(prefect)
        log(f"scan with {TARGETS} live targets x {args.repeat}")
        ours = _repeat([DOCTOR, "scan", "--format", "json"], env, args.repeat, (1,))
        base = _repeat(
            [find_py_spy(), "dump", "--pid", str(pids[0]), "--json", "--native"], env, args.repeat, (0,)
        )
        rows += _rows(f"scan sampling {TARGETS} targets x 5", ours, base, "one `py-spy dump --native`")
    print_table(f"Memory (max over {args.repeat} runs)", rows)


if __name__ == "__main__":
    main()
