"""How times read in the scan's views (terminal, Markdown, error messages): one style everywhere.

Durations are `durations.seconds_text` (45s, 3m05s, 12m, 3h05m), as in the
health report; timestamps are UTC to the second, never with microseconds.
"""

from __future__ import annotations

from datetime import timezone

from prefect_cancel_doctor.durations import seconds_text
from prefect_cancel_doctor.inert import visible
from prefect_cancel_doctor.prefect_records import parse_time


def duration_text(seconds: float | None) -> str:
    """A duration with its unit: 0.42s, 45s, 3m05s, 12m, 3h05m, 2d4h; '-' for none."""
    return "-" if seconds is None else seconds_text(seconds)


def timestamp_text(value: str | None, *, zone: bool = True) -> str:
    """An ISO timestamp for people: "2026-11-27 12:00:03 UTC" (no fraction); '-' for none.

    Text that is no timestamp is shown as it is (inert).
    """
    moment = parse_time(value)
    if moment is None:
        return visible(value, 40) if value else "-"
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC" if zone else text


__all__ = ["duration_text", "timestamp_text"]
