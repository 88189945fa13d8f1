"""What `report` (and the scheduled flow) is asked to do: `HealthOptions`, parsed as people give them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from prefect_cancel_doctor.core.durations import parse_duration
from prefect_cancel_doctor.health.rules import Rule, parse_rules
from prefect_cancel_doctor.scan.engine import Options

_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True)
class HealthOptions:
    """What `report` reads and how; every field has a CLI flag and a PCD_* variable."""

    since: timedelta = timedelta(hours=24)
    #: The window as the user wrote it ("24h").
    window_label: str = "24h"
    slow: timedelta = timedelta(seconds=60)
    top: int = 10
    #: Sample the stuck runs' processes here (else: locate them from the API only).
    sample: bool = True
    scan: Options = dataclasses.field(default_factory=Options)
    rules: tuple[Rule, ...] = ()


class OptionError(ValueError):
    """A report option that does not parse; `parameter` names it: since, slow or fail_on."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_health_options(
    *,
    since: str = "24h",
    slow: str = "60s",
    top: int = 10,
    sample: bool = True,
    fail_on: Iterable[str] = (),
    scan: Options | None = None,
) -> HealthOptions:
    """The report's options as people give them (`report`'s flags, the flow's parameters); `OptionError`."""
    return HealthOptions(
        since=_parsed("since", parse_duration, since),
        window_label=since.strip(),
        slow=_parsed("slow", parse_duration, slow),
        top=top,
        sample=sample,
        scan=scan or Options(),
        rules=_parsed("fail_on", parse_rules, fail_on),
    )


def _parsed(parameter: str, parse: Callable[[_In], _Out], value: _In) -> _Out:
    try:
        return parse(value)
    except ValueError as exc:
        raise OptionError(parameter, str(exc)) from None


__all__ = ["HealthOptions", "OptionError", "parse_health_options"]
