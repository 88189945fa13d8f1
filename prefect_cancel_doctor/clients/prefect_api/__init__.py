"""The Prefect REST API, as far as the doctor needs it (read-only).

Works against a self-hosted server (optional basic auth string) and Prefect
Cloud workspace URLs (bearer key). The transport is injectable so tests can
replay faults with `httpx.MockTransport`.

`PrefectApi` (`client`) reads over a `PrefectSession` (`session`: credentials, retries, the CSRF
handshake, paging); `refs` makes the report's view of a run from its records.
"""

from __future__ import annotations

# Tests patch `prefect_api.time.sleep` (the retries' wait).
import time as time

from prefect_cancel_doctor.clients.prefect_api.client import (
    EVENTS_IDS_PER_QUERY,
    EVENTS_PAGE_SIZE,
    LOG_LINES,
    EventCount,
    EventsUnavailable,
    PrefectApi,
)

# tests/health/test_reader.py reads the events pager's token parsing.
from prefect_cancel_doctor.clients.prefect_api.client import _page_token as _page_token
from prefect_cancel_doctor.clients.prefect_api.refs import cancelling_since, to_flow_run_ref
from prefect_cancel_doctor.clients.prefect_api.session import (
    MAX_RETRY_WAIT,
    PAGE_SIZE,
    RETRIES,
    PrefectSession,
)

__all__ = [
    "EVENTS_IDS_PER_QUERY",
    "EVENTS_PAGE_SIZE",
    "LOG_LINES",
    "MAX_RETRY_WAIT",
    "PAGE_SIZE",
    "RETRIES",
    "EventCount",
    "EventsUnavailable",
    "PrefectApi",
    "PrefectSession",
    "cancelling_since",
    "to_flow_run_ref",
]
