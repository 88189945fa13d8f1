"""Listing the runs in Cancelling: pages asked for one at a time, against several in flight.

`PrefectApi.cancelling_runs()` in this process on the seeded 25,000-run database of
the cancel-heavy series (18,800 runs in Cancelling, 95 pages), taking turns:

- one page at a time (`CANCELLING_PAGES_IN_FLIGHT = 1`, the listing before
  2026-12-07), against the default (3 in flight once the first page is full);
- the same with a round trip added to every request (`--rtt-ms`, 100 by default),
  as for a server across a network (Prefect Cloud, a remote self-hosted API): the
  local server answers in ~0.1 s a page, all of it its own CPU, so here the pages in
  flight can only hide our own parsing and the round trips.

    python -m bench.listing [--repeat 3] [--rtt-ms 100]
"""

from __future__ import annotations

import argparse
import functools
import time

import httpx

from bench._common import Row, alternate, log, median, print_table
from bench.seed import serve
from prefect_cancel_doctor.clients._http import transport
from prefect_cancel_doctor.clients.prefect_api import PrefectApi, client
from prefect_cancel_doctor.clients.settings import Connection

SIZE = 25_000


class _Distant(httpx.BaseTransport):
    """The usual transport, each request sent `rtt` seconds late (a round trip's wait)."""

    def __init__(self, rtt: float) -> None:
        self._rtt = rtt
        self._inner = transport(retries=2, verify=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self._rtt)
        return self._inner.handle_request(request)


def _listing(api: PrefectApi, in_flight: int) -> None:
    client.CANCELLING_PAGES_IN_FLIGHT = in_flight
    api.cancelling_runs()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=100.0)
    args = parser.parse_args()
    default = client.CANCELLING_PAGES_IN_FLIGHT
    rows = []
    with serve(SIZE, "cancels") as prefect:
        for rtt in (0.0, args.rtt_ms / 1000):
            distant = _Distant(rtt) if rtt else None
            with PrefectApi(Connection(prefect.api_url), transport=distant) as api:
                count = len(api.cancelling_runs())
                log(f"{count} runs in Cancelling; round trip {rtt * 1000:g} ms")
                times = alternate(
                    {
                        "one": functools.partial(_listing, api, 1),
                        "ahead": functools.partial(_listing, api, default),
                    },
                    args.repeat,
                )
            where = f"{rtt * 1000:g} ms round trip added" if rtt else "local server"
            rows.append(
                Row(
                    f"{count:,} in Cancelling, {where}: {default} pages in flight, median of {args.repeat}",
                    median(times["ahead"]),
                    median(times["one"]),
                    "s",
                    baseline_name="one page at a time",
                )
            )
    client.CANCELLING_PAGES_IN_FLIGHT = default
    print_table("Listing the runs in Cancelling", rows)


if __name__ == "__main__":
    main()
