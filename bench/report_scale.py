"""The health report at fleet scale: `report --since 24h` over servers of 1k, 10k and 50k runs,
and `report --since 7d` over 1k, 5k and 20k cancels (`--series cancels`).

For each seeded database (see bench/seed.py: a month of history, its events
included, 4 % of the runs cancelled through Cancelling, 1–5 % stuck in
Cancelling now) a quiet local server is started on a copy, moved to now, and
these take turns, each a whole process, start-up included:

- ours: `prefect-cancel-doctor report --since 24h --format json --output-file F`
  (cancel events of the window, what became of each, the runs in Cancelling
  now located and, since none runs here, not sampled; statistics; the JSON);
- (a) a script doing the same with Prefect's client, the way one would
  without the doctor: `read_flow_runs` of the runs that ended Cancelled in the
  window and of those in Cancelling now, then each run's state history
  (`read_flow_run_states`) for its time from Cancelling to Cancelled;
- (b) the floor: a bare httpx loop paging the server's `prefect.flow-run.Cancelling`
  events of the window (`POST /events/filter`, then its next pages): the least
  any report must read;
- (c) the floor of the runs stuck now: a bare httpx loop paging the runs in
  Cancelling (`POST /flow_runs/filter`, 200 a page), each stuck run's whole
  record, as any report naming where each stuck run is must read them;
  (b + c) in one process is the floor the report is held to.

The cancel-heavy series (`--series cancels`: bench/seed.py's 1,250, 6,250 and
25,000-run databases with 1,000, 5,000 and 20,000 cancels in the last 6 days,
94 % of them still in Cancelling) runs `report --since 7d` against (b + c) in
one process; the script (a), a request per run, is left out there.

Each is timed, and its peak RSS read from /proc while it runs. The issue's
target for 20,000 cancels: ≤ 10 s and ≤ 150 MB.

    python -m bench.report_scale [--repeat 3] [--sizes 1000,10000,50000]
    python -m bench.report_scale --series cancels [--repeat 3] [--sizes 1250,6250,25000]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    DOCTOR,
    Peak,
    Row,
    client_env,
    log,
    median,
    peak_memory,
    print_table,
    ratio_row,
)
from bench.seed import serve, size_arguments

CLIENT_SCRIPT = """
from datetime import datetime, timedelta, timezone
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter, FlowRunFilterEndTime, FlowRunFilterState, FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

since = datetime.now(timezone.utc) - timedelta(hours=24)
filters = [
    FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLED])),
        end_time=FlowRunFilterEndTime(after_=since),
    ),
    FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))),
]
durations = []
with get_client(sync_client=True) as client:
    for flow_run_filter in filters:
        offset = 0
        while True:
            page = client.read_flow_runs(flow_run_filter=flow_run_filter, limit=200, offset=offset)
            for run in page:
                states = sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
                asked = next((s.timestamp for s in states if s.type == StateType.CANCELLING), None)
                ended = next((s.timestamp for s in states if s.type == StateType.CANCELLED), None)
                if asked and ended:
                    durations.append((ended - asked).total_seconds())
            if len(page) < 200:
                break
            offset += 200
durations.sort()
print(len(durations), durations[len(durations) // 2] if durations else None)
"""

FLOOR_SCRIPT = """
import os, sys
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit
import httpx

since = (datetime.now(timezone.utc) - timedelta(hours=int(sys.argv[1]))).isoformat()
body = {
    "filter": {"event": {"name": ["prefect.flow-run.Cancelling"]}, "occurred": {"since": since}},
    "limit": 50,
}
events = []
with httpx.Client(base_url=os.environ["PREFECT_API_URL"] + "/") as http:
    page = http.post("events/filter", json=body).json()
    while True:
        events.extend(page["events"])
        if not page.get("next_page"):
            break
        token = parse_qs(urlsplit(page["next_page"]).query)["page-token"][0]
        page = http.get("events/filter/next", params={"page-token": token}).json()
    runs = []
    if sys.argv[2:] == ["runs"]:
        state = {"state": {"type": {"any_": ["CANCELLING"]}}}
        while True:
            body = {"flow_runs": state, "limit": 200, "offset": len(runs), "sort": "START_TIME_ASC"}
            page = http.post("flow_runs/filter", json=body).json()
            runs.extend(page)
            if len(page) < 200:
                break
print(len(events), len(runs))
"""


def _report(env: dict[str, str], output: Path, since: str) -> tuple[Peak, dict[str, Any]]:
    argv = [DOCTOR, "report", "--since", since, "--format", "json", "--output-file", str(output)]
    peak = peak_memory(argv, env, ok=(0, 1))
    return peak, json.loads(output.read_text())


def measure(size: int, cancelling: int, repeat: int, series: str = "") -> tuple[list[Row], str]:
    cancels = series == "cancels"
    since, hours = ("7d", 24 * 7) if cancels else ("24h", 24)
    floor_argv = [sys.executable, "-c", FLOOR_SCRIPT, str(hours), "runs"]
    with serve(size, series) as prefect, tempfile.TemporaryDirectory(prefix="pcd-bench-report-") as tmp:
        env = client_env(prefect)
        output = Path(tmp) / "report.json"
        log(f"{size:,} runs ({cancelling} cancels): report, baselines, floors x {repeat}, taking turns")
        ours: list[Peak] = []
        client: list[Peak] = []
        floor: list[Peak] = []
        floor_bc: list[Peak] = []
        document: dict[str, Any] = {}
        for _ in range(repeat + 1):  # the first round warms the server's caches, not counted
            peak, document = _report(env, output, since)
            ours.append(peak)
            if not cancels:
                client.append(peak_memory([sys.executable, "-c", CLIENT_SCRIPT], env, ok=(0,)))
                floor.append(peak_memory([sys.executable, "-c", FLOOR_SCRIPT, str(hours)], env, ok=(0,)))
            floor_bc.append(peak_memory(floor_argv, env, ok=(0,)))
        json_mb = output.stat().st_size / 1e6
        ours, client, floor, floor_bc = ours[1:], client[1:], floor[1:], floor_bc[1:]
    seconds = median([p.seconds for p in ours])
    rss = max(p.own_mb for p in ours)
    label = f"{size:,} runs, {cancelling:,} cancels: `report --since {since}`"
    rows = []
    if not cancels:
        rows += [
            ratio_row(
                f"{label}, wall time",
                seconds,
                median([p.seconds for p in client]),
                "s",
                None,
                "(a) `read_flow_runs` + state histories",
            ),
            ratio_row(
                f"{label}, wall time",
                seconds,
                median([p.seconds for p in floor]),
                "s",
                None,
                "(b) events loop",
            ),
        ]
    floor_seconds = median([p.seconds for p in floor_bc])
    rows += [
        ratio_row(
            f"{label}, wall time", seconds, floor_seconds, "s", None, "(b + c) events and stuck runs, httpx"
        ),
        ratio_row(
            f"{label}, peak RSS",
            rss,
            max(p.own_mb for p in floor_bc),
            "MB",
            None,
            "(b + c) events and stuck runs, httpx",
        ),
    ]
    if not cancels:
        rows.append(
            ratio_row(
                f"{label}, peak RSS",
                rss,
                max(p.own_mb for p in client),
                "MB",
                None,
                "(a) `read_flow_runs` + state histories",
            )
        )
    source, fleet = document["source"], document["fleet"]
    stuck = len(document["stuck"]) + document.get("omitted", {}).get("stuck", 0)
    growth = (
        f"| {size:,} | {fleet['requested']:,} | {stuck:,} | {seconds:.2f} s | "
        f"{rss:.0f} MB | {json_mb:.2f} MB | {source['requests']} | {source['method']} | "
        f"{floor_seconds:.2f} s | {max(p.own_mb for p in floor_bc):.0f} MB |"
    )
    return rows, growth


def main() -> None:
    series = ""
    if "--series" in sys.argv:
        index = sys.argv.index("--series")
        series = sys.argv[index + 1]
        del sys.argv[index : index + 2]
    repeat, sizes = size_arguments(__doc__ or "", repeat=3, series=series)
    rows: list[Row] = []
    growth: list[str] = []
    for size, cancelling in sizes:
        size_rows, line = measure(size, cancelling, repeat, series)
        rows += size_rows
        growth.append(line)
    since = "7d" if series == "cancels" else "24h"
    notes = [
        "Cost against the size of the history (medians; RSS is the largest seen):\n\n"
        "| runs on the server | cancels in the window | in Cancelling now | report | peak RSS | JSON | "
        "requests | read from | floor (b + c) | its RSS |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n" + "\n".join(growth),
    ]
    print_table(f"`report --since {since}` at fleet scale (median of {repeat} alternating runs)", rows, notes)


if __name__ == "__main__":
    main()
