"""Scan at fleet scale: list and classify the runs stuck in Cancelling on servers of 1k, 10k and 50k runs.

For each seeded database (see bench/seed.py; built and cached on first use) a
quiet local Prefect server is started on a copy, and these take turns:

- as whole processes, start-up included, as an on-call engineer runs them:
  ours, `prefect-cancel-doctor scan --format json` (list, locate, classify,
  render; nothing is sampled: no run has a process on this host);
  (a) `prefect flow-run ls --state-type CANCELLING --limit 200` (Prefect's CLI
  shows at most one page, 200 runs) and (a) a script paging Prefect's client
  `read_flow_runs` over the same filter; (b) a script with a bare httpx loop
  over the same paged filter;
- in this process, each with a fresh client: ours, `engine.scan()` and its
  JSON; (b) the httpx loop; Prefect's `read_flow_runs` paged; and our API
  client's listing alone (`PrefectApi.cancelling_runs()`), to separate the
  listing from what the scan adds (flow and deployment names, the workers of
  every work pool involved, recently cancelled runs, the rules).

Targets: ours ≤ 0.2× (a) and ≤ 1.5× (b), and a cost that follows the number
of runs in Cancelling, not the size of the history.

    python -m bench.scan_scale [--repeat 9] [--sizes 1000,10000,50000]
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable

import httpx

from bench._common import (
    DOCTOR,
    PREFECT,
    Row,
    alternate,
    client_env,
    command,
    log,
    median,
    print_table,
    ratio_row,
)
from bench.seed import seeding_record, serve, size_arguments
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.render import Format, render
from prefect_cancel_doctor.scan.engine import Options, scan

CANCELLING = {"flow_runs": {"state": {"type": {"any_": ["CANCELLING"]}}}}

CLIENT_SCRIPT = """
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType

cancelling = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])))
runs, offset = [], 0
with get_client(sync_client=True) as client:
    while True:
        page = client.read_flow_runs(flow_run_filter=cancelling, limit=200, offset=offset)
        runs.extend(page)
        if len(page) < 200:
            break
        offset += 200
print(len(runs))
"""

FLOOR_SCRIPT = """
import os, httpx
body = {"flow_runs": {"state": {"type": {"any_": ["CANCELLING"]}}}, "sort": "START_TIME_ASC", "limit": 200}
runs, offset = [], 0
with httpx.Client(base_url=os.environ["PREFECT_API_URL"] + "/", verify=False) as http:
    while True:
        page = http.post("flow_runs/filter", json={**body, "offset": offset}).json()
        runs.extend(page)
        if len(page) < 200:
            break
        offset += 200
print(len(runs))
"""


def floor(api_url: str) -> Callable[[], None]:
    """The least any client can do: page through the filter with httpx and parse the JSON.

    `verify=False`: the URL is plain http, and loading the CA bundle (15-60 ms) would
    only slow the floor down; our client skips it for such URLs too.
    """

    def run() -> None:
        with httpx.Client(base_url=api_url + "/", verify=False) as http:
            offset = 0
            while True:
                body = {**CANCELLING, "sort": "START_TIME_ASC", "limit": 200, "offset": offset}
                page = http.post("flow_runs/filter", json=body).json()
                if len(page) < 200:
                    return
                offset += 200

    return run


def prefect_client(api_url: str) -> Callable[[], None]:
    """Prefect's client, as a script using it would list the runs in Cancelling."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    cancelling = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))
    )

    def run() -> None:
        with SyncPrefectClient(api_url) as client:
            offset = 0
            while True:
                page = client.read_flow_runs(flow_run_filter=cancelling, limit=200, offset=offset)
                if len(page) < 200:
                    return
                offset += 200

    return run


def ours(api_url: str, expected: int) -> Callable[[], None]:
    """engine.scan (no sampling happens: nothing runs here) and the JSON it renders."""

    def run() -> None:
        with PrefectApi(Connection(api_url)) as api:
            report = scan(api, Options())
        render(report, Format.JSON, io.StringIO())
        if len(report.runs) != expected:
            raise RuntimeError(f"the scan found {len(report.runs)} runs, expected {expected}")

    return run


def listing(api_url: str) -> Callable[[], None]:
    """Our API client's part alone: `PrefectApi.cancelling_runs()` (the same paged filter as the floor)."""

    def run() -> None:
        with PrefectApi(Connection(api_url)) as api:
            api.cancelling_runs()

    return run


def measure(size: int, cancelling: int, repeat: int) -> tuple[list[Row], dict[str, float]]:
    with serve(size) as prefect:
        env = client_env(prefect)
        url = prefect.api_url
        log(f"{size:,} runs ({cancelling} cancelling): timing 8 ways x {repeat} runs, taking turns")
        times = alternate(
            {
                "ours CLI": command([DOCTOR, "scan", "--format", "json"], env, ok=(1,)),
                "flow-run ls": command(
                    [PREFECT, "flow-run", "ls", "--state-type", "CANCELLING", "--limit", "200"], env
                ),
                "client process": command([sys.executable, "-c", CLIENT_SCRIPT], env),
                "floor process": command([sys.executable, "-c", FLOOR_SCRIPT], env),
                "ours in process": ours(url, cancelling),
                "client in process": prefect_client(url),
                "floor in process": floor(url),
                "listing in process": listing(url),
            },
            repeat=repeat,
        )
    m = {name: median(values) for name, values in times.items()}
    label = f"{size:,} runs, {cancelling} cancelling"
    cli = f"{label}: `scan` (process)"
    inproc = f"{label}: scan (in process)"
    rows = [
        ratio_row(
            cli,
            m["ours CLI"],
            m["flow-run ls"],
            "s",
            0.2,
            "(a) `prefect flow-run ls --state-type CANCELLING`",
        ),
        ratio_row(cli, m["ours CLI"], m["client process"], "s", 0.2, "(a) script paging `read_flow_runs`"),
        ratio_row(inproc, m["ours in process"], m["floor in process"], "s", 1.5, "(b) httpx loop"),
        ratio_row(cli, m["ours CLI"], m["floor process"], "s", 1.5, "(b) httpx loop as a script"),
        ratio_row(inproc, m["ours in process"], m["client in process"], "s", None, "`read_flow_runs` paged"),
        ratio_row(
            f"{label}: our listing alone (`cancelling_runs`)",
            m["listing in process"],
            m["floor in process"],
            "s",
            None,
            "(b) httpx loop",
        ),
    ]
    return rows, m


def main() -> None:
    repeat, sizes = size_arguments(__doc__ or "", repeat=9)
    rows: list[Row] = []
    per_run: list[str] = []
    for size, cancelling in sizes:
        size_rows, m = measure(size, cancelling, repeat)
        rows += size_rows
        per_run.append(
            f"| {size:,} | {cancelling} | {m['ours in process'] * 1000:.0f} ms | "
            f"{m['ours in process'] / cancelling * 1000:.2f} ms | {m['floor in process'] * 1000:.0f} ms | "
            f"{m['ours CLI'] * 1000:.0f} ms |"
        )
    record = seeding_record()
    notes = [
        "Cost against the size of the history (medians):\n\n"
        "| runs on the server | in Cancelling | scan in process | per cancelling run | floor | CLI scan |\n"
        "|---:|---:|---:|---:|---:|---:|\n" + "\n".join(per_run),
    ]
    if record:
        seconds = record["seconds"]
        notes.append(
            f"Seeding (once, cached): {seconds['total']:.0f} s in all for 50,000 runs "
            f"({record['runs_per_second']} runs/s through the API; load average then "
            f"{' / '.join(str(x) for x in record.get('load_average', []))}); "
            + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total")
            + "."
        )
    print_table(f"Scan at fleet scale (median of {repeat} alternating runs)", rows, notes)


if __name__ == "__main__":
    main()
