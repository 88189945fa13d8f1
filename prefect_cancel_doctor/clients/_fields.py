"""Readers of one field of an API's JSON, for every client: a value of the wrong type reads as absent.

An API's answer (or a run's configuration inside it) may hold anything: these never raise.
`as_text`, `as_labels` and `as_texts` also make what they return inert (`core.inert.visible`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prefect_cancel_doctor.core.inert import visible


def as_mapping(value: object) -> Mapping[str, Any]:
    """A JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_str(value: object) -> str | None:
    """A non-empty string as it was sent (for ids and values compared, never printed as is)."""
    return value if isinstance(value, str) and value else None


def as_text(value: object) -> str | None:
    """A non-empty string, made inert."""
    return visible(value) if isinstance(value, str) and value else None


def as_int(value: object) -> int | None:
    """An integer (a boolean or a float is not one)."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def as_truncated_int(value: object) -> int | None:
    """A finite number (not a boolean), truncated to an integer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    # json.loads reads Infinity and NaN, which no integer holds.
    return int(value) if math.isfinite(value) else None


def as_float(value: object) -> float | None:
    """A number (not a boolean), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def as_labels(value: object) -> dict[str, str]:
    """A JSON object of labels: every key and value as inert text."""
    return {visible(str(k)): visible(str(v)) for k, v in as_mapping(value).items()}


def as_string_values(value: object) -> dict[str, str]:
    """A JSON object's string values by key (others left out), inert."""
    return {visible(str(k)): visible(v) for k, v in as_mapping(value).items() if isinstance(v, str)}


def as_texts(value: object) -> tuple[str, ...]:
    """A JSON list, every item as inert text (an argv, a list of names)."""
    return tuple(visible(str(a)) for a in value) if isinstance(value, list) else ()


__all__ = [
    "as_float",
    "as_int",
    "as_labels",
    "as_mapping",
    "as_str",
    "as_string_values",
    "as_text",
    "as_texts",
    "as_truncated_int",
]
