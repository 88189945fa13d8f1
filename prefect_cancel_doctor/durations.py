"""Durations as people type them: '90s', '30m', '1h', '2d' (a bare number is seconds).

Standard library only: the CLI imports it at start-up.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> timedelta:
    """'90s', '30m', '1h', '2d' → timedelta; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90s, 30m, 1h or 2d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
