"""How times read in the scan's views (terminal, Markdown, error messages): one style everywhere.

Durations are `durations.seconds_text` (45s, 3m05s, 12m, 3h05m), as in the
health report; timestamps are UTC to the second, never with microseconds.
"""

from __future__ import annotations

from datetime import timezone

from prefect_cancel_doctor.clients.prefect_records import parse_time
from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.model import Absorber, Delivered, Delivery


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


_ABSORBED = {
    Absorber.SIG_IGN: "SIGTERM is ignored (SIG_IGN)",
    Absorber.BLOCKED: "SIGTERM is blocked in the main thread",
    Absorber.HANDLER_RETURNS: "a SIGTERM handler of the flow's own returned",
    Absorber.EXCEPTION_SWALLOWED: "an `except` of the flow caught TerminationSignal",
    Absorber.GIL_HELD: "another thread holds the GIL, so Prefect's handler cannot run",
    Absorber.C_CALL: "the main thread is in a C call, so Prefect's handler waits",
    Absorber.CLEANUP_BLOCKS: "the flow's cleanup on the way out blocks",
    Absorber.PID1_DROPPED: "PID 1 has no handler and dropped it",
}
_ANSWER = {Delivered.YES: "yes", Delivered.NO: "no", Delivered.UNKNOWN: "cannot tell"}


def delivery_heading(delivery: Delivery) -> str:
    """ "Did a SIGTERM come? yes: a SIGTERM handler of the flow's own returned (handler_returns)"."""
    answer = _ANSWER[delivery.sigterm]
    if delivery.absorbed_by is not None:
        answer += f": {_ABSORBED[delivery.absorbed_by]} ({delivery.absorbed_by.value})"
    return f"Did a SIGTERM come? {answer}"


def delivery_lines(delivery: Delivery) -> tuple[str, ...]:
    """Each sign for and against, and each source not read, one line each."""
    return (
        *(f"yes: {sign}" for sign in delivery.signs_for),
        *(f"no: {sign}" for sign in delivery.signs_against),
        *(f"not read: {what}" for what in delivery.unread),
    )


__all__ = ["delivery_heading", "delivery_lines", "duration_text", "timestamp_text"]
