"""The model as JSON-ready plain values: dataclasses as dicts, enums as their values."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

from prefect_cancel_doctor.model.report import Diagnosis
from prefect_cancel_doctor.model.samples import ProcessSample


def _latest_threads(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """Every thread of the run's processes as the last sample saw it, with its pid and role.

    The full series of samples is under `target.processes[].threads`; this flat
    view is what a script usually wants.
    """
    processes = diagnosis.target.processes if diagnosis.target else ()
    return [
        {"pid": process.pid, "role": process.role, **_plain(thread)}
        for process in processes
        if process.dumps
        for thread in process.dumps[-1]
    ]


def samples_in_place_of_stacks(plain: list[dict[str, Any]], processes: Sequence[ProcessSample]) -> None:
    """Each plain process (`to_plain` of `processes`) says how many py-spy samples were taken
    (`samples`) in place of their stacks (`threads`): the lean JSON of `scan` and of the report."""
    for entry, process in zip(plain, processes, strict=True):
        entry.pop("threads", None)
        entry["samples"] = len(process.dumps)


#: Types copied as they are. Exact types: a `str` enum (Cause) must become its value.
_SCALARS = frozenset({str, int, float, bool, type(None)})


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass, None for any other class (looked up once a class)."""
    if cls not in _FIELD_NAMES:
        is_data = dataclasses.is_dataclass(cls)
        _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls)) if is_data else None
    return _FIELD_NAMES[cls]


def to_plain(value: Any) -> Any:
    """A model object (or a dataclass, tuple, list or dict holding some) as JSON-ready plain values."""
    return _plain(value)


def _plain(value: Any) -> Any:
    # A report of 500 runs is ~20,000 values: the common cases come first.
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _field_names(kind)
    if names is not None:
        out = {name: _plain(getattr(value, name)) for name in names}
        if isinstance(value, ProcessSample):
            out["threads"] = out.pop("dumps")
        if isinstance(value, Diagnosis):
            out["threads"] = _latest_threads(value)
            if value.published is None:  # only a verdict read from another host's event says where from
                del out["published"]
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
