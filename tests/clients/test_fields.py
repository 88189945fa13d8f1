"""The JSON field readers every client parses with: a value of the wrong type reads as absent."""

from __future__ import annotations

import json

from prefect_cancel_doctor.clients._fields import as_float, as_int, as_truncated_int
from prefect_cancel_doctor.clients.docker_api import container_info
from prefect_cancel_doctor.clients.prefect_records import parse_pool_concurrency


def test_numbers_that_no_integer_holds_read_as_absent() -> None:
    # GIVEN what json.loads makes of Infinity, -Infinity and NaN
    for value in json.loads("[Infinity, -Infinity, NaN]"):
        # THEN an integer field holding one is absent, and no parser crashes on it
        assert as_truncated_int(value) is None and as_int(value) is None
        assert container_info({"RestartCount": value, "State": {"Pid": value}}).restart_count == 0
        assert parse_pool_concurrency({"active_slots": value}) is not None
    assert as_truncated_int(2.9) == 2 and as_truncated_int(True) is None and as_float(3) == 3.0
