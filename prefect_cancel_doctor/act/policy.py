"""The autopilot's policy: which verdicts `agent --autopilot` may act on, how sure and how late.

A policy is a small TOML (or JSON) document a team writes and reviews::

    name = "safe"
    causes = ["orphaned_infrastructure", "child_process_survives", "infrastructure_gone", "never_started"]
    min_confidence = 0.9        # the verdict's confidence, at least
    stuck_for = "10m"           # in Cancelling (or Cancelled with something left running) this long
    max_runs_per_cycle = 3      # runs acted on per agent cycle, at most
    max_actions_per_hour = 10   # runs acted on per hour by this host's autopilot, at most
    grace = "30s"               # between SIGTERM and SIGKILL (the Runner's own 30 s)
    work_pools = []             # only runs of these work pools (empty: any)

`safe` is built in (the values above). Every key but `causes` has that default; an unknown key
is an error (a typo would otherwise loosen nothing and tighten nothing, silently). A cause that
`resolve` never acts on (`not_attachable`, `unknown`, `uninterruptible_io`) is refused when the
policy is read, not at the first stuck run.

Standard library only (tomllib; tomli before Python 3.11).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.core.durations import parse_duration
from prefect_cancel_doctor.model import Cause

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The built-in policy's name.
SAFE = "safe"
#: The causes the built-in `safe` policy acts on: nothing of them needs judgement.
SAFE_CAUSES = (
    Cause.ORPHANED_INFRASTRUCTURE,
    Cause.CHILD_PROCESS_SURVIVES,
    Cause.INFRASTRUCTURE_GONE,
    Cause.NEVER_STARTED,
)
#: A policy file is small; anything larger is not one.
MAX_POLICY_BYTES = 64_000


class PolicyError(ValueError):
    """A policy that cannot be read, or says something the autopilot will not do."""


@dataclass(frozen=True)
class Policy:
    """What the autopilot may act on, and how much (see the module docstring)."""

    name: str
    causes: frozenset[Cause]
    min_confidence: float = 0.9
    #: Seconds a run must have been stuck (since it entered Cancelling) before it is acted on.
    stuck_for_seconds: float = 600.0
    max_runs_per_cycle: int = 3
    max_actions_per_hour: int = 10
    #: Seconds between SIGTERM and SIGKILL.
    grace_seconds: float = 30.0
    #: Only runs of these work pools (empty: any pool).
    work_pools: frozenset[str] = field(default_factory=frozenset)

    def to_dict(self) -> dict[str, Any]:
        """The policy as a document (what the events carry, what `load_policy` reads back)."""
        return {
            "name": self.name,
            "causes": sorted(cause.value for cause in self.causes),
            "min_confidence": self.min_confidence,
            "stuck_for": f"{self.stuck_for_seconds:g}s",
            "max_runs_per_cycle": self.max_runs_per_cycle,
            "max_actions_per_hour": self.max_actions_per_hour,
            "grace": f"{self.grace_seconds:g}s",
            "work_pools": sorted(self.work_pools),
        }

    def describe(self) -> str:
        """One line: the policy as a person reads it."""
        pools = f" in work pool(s) {', '.join(sorted(self.work_pools))}" if self.work_pools else ""
        return (
            f"policy {self.name}: {', '.join(sorted(c.value for c in self.causes))}{pools}, confidence "
            f">= {self.min_confidence:g}, stuck >= {self.stuck_for_seconds:g} s, at most "
            f"{self.max_runs_per_cycle} run(s) a cycle and {self.max_actions_per_hour} an hour, grace "
            f"{self.grace_seconds:g} s"
        )


def safe_policy() -> Policy:
    """The built-in policy: the four causes that need no judgement, confidence >= 0.9, 10 minutes."""
    return Policy(SAFE, frozenset(SAFE_CAUSES))


_KEYS = {
    "name",
    "causes",
    "min_confidence",
    "stuck_for",
    "max_runs_per_cycle",
    "max_actions_per_hour",
    "grace",
    "work_pools",
}


def parse_policy(document: Mapping[str, Any], default_name: str = "custom") -> Policy:
    """A policy from its document (parsed TOML or JSON); `PolicyError` says what is wrong."""
    unknown = sorted(set(document) - _KEYS)
    if unknown:
        raise PolicyError(f"unknown key(s) {', '.join(unknown)}; a policy has {', '.join(sorted(_KEYS))}")
    if "causes" not in document:
        raise PolicyError("a policy names the causes it may act on: causes = [...]")
    causes = _causes(document["causes"])
    name = document.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or not name.isprintable():
        raise PolicyError(
            "name: a short text, no control characters (it is shown in logs, events and the UI)"
        )
    return Policy(
        name=name.strip(),
        causes=causes,
        min_confidence=_number(document, "min_confidence", 0.9, 0.0, 1.0),
        stuck_for_seconds=_duration(document, "stuck_for", 600.0),
        max_runs_per_cycle=_count(document, "max_runs_per_cycle", 3),
        max_actions_per_hour=_count(document, "max_actions_per_hour", 10),
        grace_seconds=_duration(document, "grace", 30.0),
        work_pools=_pools(document.get("work_pools", [])),
    )


def load_policy(spec: str) -> Policy:
    """`safe`, or a policy file: JSON when its name ends in .json, else TOML."""
    if spec.strip() == SAFE:
        return safe_policy()
    path = Path(spec).expanduser()
    try:
        raw = path.read_bytes()[: MAX_POLICY_BYTES + 1]
    except OSError as exc:
        raise PolicyError(f"cannot read the policy {spec}: {exc.strerror or exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{spec} is over {MAX_POLICY_BYTES} bytes: not a policy")
    try:
        text = raw.decode("utf-8")
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(
            f"{spec} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
        ) from None
    if not isinstance(document, dict):
        raise PolicyError(f"{spec}: a policy is a table of keys")
    try:
        return parse_policy(document, default_name=path.stem)
    except PolicyError as exc:
        raise PolicyError(f"{spec}: {exc}") from None


def _causes(value: object) -> frozenset[Cause]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError('causes: a list of at least one cause, e.g. ["orphaned_infrastructure"]')
    causes = set()
    for text in value:
        try:
            cause = Cause(text)
        except ValueError:
            known = ", ".join(c.value for c in Cause if c.allows_action)
            raise PolicyError(
                f"causes: {text!r:.60} is no cause; the causes it may act on: {known}"
            ) from None
        if not cause.allows_action:
            raise PolicyError(
                f"causes: resolve never acts on {cause.value} (nothing safe can be done from here), "
                "so neither does the autopilot"
            )
        causes.add(cause)
    return frozenset(causes)


def _number(document: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(f"{key}: a number between {low:g} and {high:g}")
    if not low <= value <= high:
        raise PolicyError(f"{key}: {value} is not between {low:g} and {high:g}")
    return float(value)


def _duration(document: Mapping[str, Any], key: str, default: float) -> float:
    value = document.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise PolicyError(f'{key}: a duration like "90s", "10m" or "1h"')
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise PolicyError(f'{key}: a duration like "90s", "10m" or "1h"')
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError as exc:
        raise PolicyError(f"{key}: {exc}") from None
    if seconds > 7 * 86400:
        raise PolicyError(f"{key}: {value!r:.40} is over a week")
    return seconds


def _count(document: Mapping[str, Any], key: str, default: int) -> int:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
        raise PolicyError(f"{key}: a whole number from 0 to 10000 (0: never act)")
    return value


def _pools(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError('work_pools: a list of work pool names, e.g. ["etl-pool"] (empty: any pool)')
    return frozenset(value)


__all__ = [
    "MAX_POLICY_BYTES",
    "SAFE",
    "SAFE_CAUSES",
    "Policy",
    "PolicyError",
    "load_policy",
    "parse_policy",
    "safe_policy",
]
