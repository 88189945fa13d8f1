"""Durations: parsed as people type them ("90s", "30m", "1h", "2d"), and formatted for people to read.

Standard library only: the CLI imports it at start-up.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> timedelta:
    """'90s', '30m', '1h', '2d' (a bare number is seconds) → timedelta; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*([smhd]?)\s*", value, re.ASCII)
    if not match:
        raise ValueError(f"{value!r:.60} is not a duration like 90s, 30m, 1h or 2d")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
    except OverflowError:
        raise ValueError(f"{value!r:.60} is longer than any duration a scan can use") from None


# -- durations for people to read: one formatter per place, each output fixed by tests ----------


def age_text(seconds: float | None) -> str:
    """Coarse, for `scan`'s on-call table ("Cancelling 15m"): 45s, 12m, 3h05m, 2d4h; '-' for none."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def seconds_text(seconds: float | None) -> str:
    """For the health report's cells and sentences: 0.42s, 7.5s, 45s, 5m00s, 12m, 3h05m, 2d4h; '–' if none.

    `age_text`, finer below 10 minutes and without a zero smaller unit (3h, 2d)."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    s = int(seconds)
    if 120 <= s < 600:
        return f"{s // 60}m{s % 60:02d}s"
    if 3600 <= s < 86400 and not s % 3600:
        return f"{s // 3600}h"
    if s >= 86400 and s % 86400 < 3600:
        return f"{s // 86400}d"
    return age_text(s)


def rough_text(seconds: float) -> str:
    """For the `--fail-on` breach messages and the retention note: 7.5s, 45s, 4.6m, 2.5h."""
    if seconds < 120:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    return _minutes_or_hours(seconds, ".1f", hours_from=7200)


def edge_text(seconds: float | None) -> str:
    """For the edges of the time-to-cancel histogram's buckets ('5s–15s', '≥1h'): 5s, 1m, 1h; '∞' for none."""
    if seconds is None:
        return "∞"
    if seconds < 60:
        return f"{seconds:g}s"
    return _minutes_or_hours(seconds, "g")


def tick_text(seconds: float) -> str:
    """For the values of the HTML report's log-scale chart, two significant digits: 0.78s, 53s, 1.9m, 2h."""
    if seconds < 60:
        return f"{seconds:.2g}s" if seconds < 10 else f"{seconds:.0f}s"
    return _minutes_or_hours(seconds, ".2g")


def _minutes_or_hours(seconds: float, spec: str, hours_from: float = 3600) -> str:
    """`seconds` in minutes ('4.6m'), or in hours ('2.5h') from `hours_from` on, formatted by `spec`."""
    if seconds < hours_from:
        return f"{seconds / 60:{spec}}m"
    return f"{seconds / 3600:{spec}}h"
