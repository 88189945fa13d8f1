"""What the engine streams: its events (`GET /events`) and a container's multiplexed logs."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from prefect_cancel_doctor.clients._fields import as_mapping, as_truncated_int
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.model import ContainerEvent

#: The engine's event actions `DockerClient.events` keeps (others: create, start, exec_*, ... ).
EVENT_ACTIONS = frozenset({"kill", "stop", "die", "oom", "restart", "destroy", "pause", "unpause"})


def parse_event(document: Any, container_id: str | None = None) -> ContainerEvent | None:
    """One event of a `GET /events` stream, if it is one of `EVENT_ACTIONS` on a container.

    None for any other event, for an event of another container than `container_id`
    (its full id, a prefix of it, or its name), and for one without a time.
    """
    if not isinstance(document, dict):
        return None
    kind = document.get("Type")
    if kind is not None and kind != "container":
        return None
    action = document.get("Action") or document.get("status")  # "status": API < 1.22
    if not isinstance(action, str) or action not in EVENT_ACTIONS:
        return None
    actor = as_mapping(document.get("Actor"))
    attributes = as_mapping(actor.get("Attributes"))
    if container_id:
        actor_id = actor.get("ID") or document.get("id")
        name = attributes.get("name")
        if isinstance(actor_id, str) and not actor_id.startswith(container_id) and name != container_id:
            return None
    at = _event_time(document)
    if at is None:
        return None
    signal = attributes.get("signal")
    exit_code = attributes.get("exitCode")
    return ContainerEvent(
        at=at,
        action=action,
        signal=visible(signal, 32) if isinstance(signal, str) and signal else None,
        exit_code=int(exit_code) if isinstance(exit_code, str) and exit_code.lstrip("-").isdigit() else None,
    )


def _event_time(document: Mapping[str, Any]) -> str | None:
    """The event's `timeNano` (else `time`, seconds) as ISO 8601 UTC, to the microsecond."""
    nanos = as_truncated_int(document.get("timeNano"))
    seconds = as_truncated_int(document.get("time"))
    try:
        if nanos:
            moment = datetime.fromtimestamp(nanos // 1_000_000_000, timezone.utc).replace(
                microsecond=nanos // 1000 % 1_000_000
            )
        elif seconds:
            moment = datetime.fromtimestamp(seconds, timezone.utc)
        else:
            return None
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def stream_lines(chunks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """The non-empty lines of a newline-delimited stream, up to `max_bytes` of it.

    A line cut by the limit is dropped; a last line without its newline is kept.
    """
    pending = b""
    read = 0
    for chunk in chunks:
        room = max_bytes - read
        if len(chunk) > room:
            chunk = chunk[:room]
        read += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
        if read >= max_bytes:
            return
    if pending.strip():
        yield pending


def demux_logs(data: bytes) -> tuple[bytes, bytes]:
    """Split the engine's multiplexed log stream (8-byte frame headers) into stdout and stderr.

    A container with a TTY sends raw bytes instead; they count as stdout.
    """
    out, err = bytearray(), bytearray()
    view = memoryview(data)
    position = 0
    while position + 8 <= len(view):
        stream, size = view[position], struct.unpack(">I", view[position + 4 : position + 8])[0]
        if stream not in (0, 1, 2) or any(view[position + 1 : position + 4]):
            return bytes(data), b""  # not multiplexed (TTY)
        chunk = view[position + 8 : position + 8 + size]
        (err if stream == 2 else out).extend(chunk)
        position += 8 + size
    if position != len(view):
        return bytes(data), b""
    return bytes(out), bytes(err)


def aware(moment: datetime) -> datetime:
    """A datetime with a time zone (a naive one is taken as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def unix_time(moment: datetime) -> str:
    """Seconds since the epoch with a fraction, as the engine's `since`/`until` take them."""
    return f"{aware(moment).timestamp():.6f}"
