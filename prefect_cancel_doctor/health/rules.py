"""The `--fail-on` rules: their names and help, parsed from text, evaluated on a report.

A new rule is a `RuleName`, its line in `RULES_HELP` and its check in `_check`,
all here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prefect_cancel_doctor.core.durations import parse_duration
from prefect_cancel_doctor.core.durations import rough_text as _human
from prefect_cancel_doctor.health.model import Breach, HealthReport, named
from prefect_cancel_doctor.health.statistics import order_stuck


class RuleName(str, enum.Enum):
    """The `--fail-on` rules."""

    #: Any run in Cancelling.
    STUCK = "stuck"
    #: Any run in Cancelling for longer than DURATION.
    STUCK_OLDER_THAN = "stuck-older-than"
    #: The fleet's p95 time to cancel above DURATION.
    P95_ABOVE = "p95-above"
    #: The fleet's longest time to cancel above DURATION.
    MAX_ABOVE = "max-above"
    #: Any suspected orphan: a cancel ended by the server's timeout, or a process found running.
    ORPHANS = "orphans"
    #: Any run that completed or failed after its cancel was requested.
    IGNORED = "ignored"
    #: Any sub-deployment run still live after its parent was cancelled.
    CHILDREN = "children"
    #: Any concurrency slot held by a run in Cancelling.
    SLOTS = "slots"


_RULES_WITH_DURATION = {RuleName.STUCK_OLDER_THAN, RuleName.P95_ABOVE, RuleName.MAX_ABOVE}

#: One line per rule, for `--fail-on`'s help (the error naming an unknown rule lists the rules).
RULES_HELP = (
    "stuck: any run in Cancelling",
    "stuck-older-than=DURATION: a run in Cancelling for longer than DURATION",
    "p95-above=DURATION: the fleet's p95 time to cancel above DURATION",
    "max-above=DURATION: the fleet's longest time to cancel above DURATION",
    "orphans: a cancel the server's timeout ended, or a finished run's process still running here",
    "ignored: a run completed or failed after its cancel was requested",
    "children: a sub-deployment run still live after its parent was cancelled",
    "slots: a concurrency slot held by a run in Cancelling",
)


@dataclass(frozen=True)
class Rule:
    """A parsed `--fail-on` rule."""

    name: RuleName
    #: The rule's threshold in seconds (duration rules only).
    threshold: float | None
    #: As given, e.g. "p95-above=2m".
    text: str


def parse_rule(text: str) -> Rule:
    """'stuck-older-than=15m' → Rule; ValueError naming the known rules otherwise."""
    name, _, argument = text.strip().partition("=")
    try:
        rule = RuleName(name.strip().lower())
    except ValueError:
        rules = ", ".join(line.partition(":")[0] for line in RULES_HELP)
        raise ValueError(f"unknown rule {name!r}; rules: {rules}") from None
    if rule in _RULES_WITH_DURATION:
        if not argument:
            raise ValueError(f"rule {rule.value} needs a duration, e.g. {rule.value}=15m")
        seconds = parse_duration(argument).total_seconds()
        return Rule(rule, seconds, f"{rule.value}={argument.strip()}")
    if argument:
        raise ValueError(f"rule {rule.value} takes no value (got {text!r})")
    return Rule(rule, None, rule.value)


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    """Every rule of `texts`; each text may hold several, separated by commas or spaces."""
    return tuple(parse_rule(part) for text in texts for part in re.split(r"[,\s]+", text) if part)


def evaluate(rules: Sequence[Rule], report: HealthReport) -> tuple[Breach, ...]:
    """The rules `report` breaks, each with a sentence saying how."""
    breaches = []
    for rule in rules:
        message = _check(rule, report)
        if message:
            breaches.append(Breach(rule.text, message))
    return tuple(breaches)


def _check(rule: Rule, r: HealthReport) -> str | None:
    ttc = r.fleet.time_to_cancel
    name = rule.name
    if name is RuleName.STUCK:
        stuck = [s.flow_run.name for s in r.stuck]
        return f"{len(stuck)} run(s) stuck in Cancelling: {named(stuck)}" if stuck else None
    if name is RuleName.STUCK_OLDER_THAN:
        assert rule.threshold is not None
        old = [s for s in r.stuck if (s.flow_run.cancelling_for_seconds or 0) > rule.threshold]
        if not old:
            return None
        oldest = max(s.flow_run.cancelling_for_seconds or 0 for s in old)
        return (
            f"{len(old)} run(s) in Cancelling for longer than {_human(rule.threshold)} "
            f"(oldest {_human(oldest)}): {named(s.flow_run.name for s in order_stuck(old))}"
        )
    if name is RuleName.P95_ABOVE:
        assert rule.threshold is not None
        if ttc.p95 is None or ttc.p95 <= rule.threshold:
            return None
        return (
            f"p95 time to cancel is {_human(ttc.p95)}, above {_human(rule.threshold)} ({ttc.count} cancels)"
        )
    if name is RuleName.MAX_ABOVE:
        assert rule.threshold is not None
        if ttc.max is None or ttc.max <= rule.threshold:
            return None
        return f"the longest cancel took {_human(ttc.max)}, above {_human(rule.threshold)}"
    if name is RuleName.ORPHANS:
        parts = []
        if r.suspected_orphans:
            timed_out = [c.flow_run_name for c in r.suspected_orphans]
            parts.append(
                f"{len(timed_out)} cancel(s) ended by the server's cancelling timeout: {named(timed_out)}"
            )
        if r.live_orphans:
            live = [s.flow_run.name for s in r.live_orphans]
            parts.append(f"{len(live)} finished run(s) whose processes still run here: {named(live)}")
        return "; ".join(parts) or None
    if name is RuleName.IGNORED:
        ignored = [c.flow_run_name for c in r.ignored_cancels]
        return (
            f"{len(ignored)} run(s) completed or failed after a cancel was requested: {named(ignored)}"
            if ignored
            else None
        )
    if name is RuleName.CHILDREN:
        children = [c.flow_run_name for c in r.orphaned_children]
        return (
            f"{len(children)} sub-deployment run(s) still live after their parent was cancelled: "
            f"{named(children)}"
            if children
            else None
        )
    if name is RuleName.SLOTS:
        held = sum(h.held for h in r.slots)
        holders = named(run for h in r.slots for run in h.runs)
        return f"{held} concurrency slot(s) held by runs stuck in Cancelling: {holders}" if held else None
    raise AssertionError(name)


__all__ = [
    "RULES_HELP",
    "Rule",
    "RuleName",
    "evaluate",
    "parse_rule",
    "parse_rules",
]
