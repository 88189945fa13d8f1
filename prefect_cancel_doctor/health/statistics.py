"""The report's statistics, pure: time to cancel per group, the histogram, offenders, top causes.

Functions of the cancels (`Cancellation`) and the stuck runs (`StuckRun`) alone:
no API, no clock. build.py calls them; the tests feed them hand-made histories.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

from prefect_cancel_doctor.core.durations import edge_text as _short
from prefect_cancel_doctor.health.model import (
    Bucket,
    CallSite,
    Cancellation,
    Distribution,
    GroupStats,
    Outcome,
    StuckRun,
    Tally,
)

#: Upper edges (seconds) of the time-to-cancel histogram's buckets; the last is open.
HISTOGRAM_EDGES = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(seconds: Sequence[float]) -> Distribution:
    """count, p50, p95 and max of a list of durations."""
    return Distribution(
        len(seconds), percentile(seconds, 50), percentile(seconds, 95), max(seconds, default=None)
    )


def has_ended(c: Cancellation) -> bool:
    """A cancel that ended (cancelled, timed out or ignored) and has its time to cancel."""
    return c.outcome in (Outcome.CANCELLED, Outcome.TIMED_OUT, Outcome.IGNORED) and c.seconds is not None


def group_stats(name: str, cancels: Sequence[Cancellation], slow_seconds: float) -> GroupStats:
    """The statistics of one group of cancels."""
    count = Counter(c.outcome for c in cancels)
    slow = sum(
        1
        for c in cancels
        if c.outcome is Outcome.CANCELLED and c.seconds is not None and c.seconds > slow_seconds
    )
    resisted = count[Outcome.TIMED_OUT] + count[Outcome.IGNORED] + count[Outcome.CANCELLING] + slow
    return GroupStats(
        name=name,
        requested=len(cancels),
        cancelled=count[Outcome.CANCELLED],
        timed_out=count[Outcome.TIMED_OUT],
        ignored=count[Outcome.IGNORED],
        cancelling=count[Outcome.CANCELLING],
        other=count[Outcome.OTHER],
        slow=slow,
        time_to_cancel=distribution([c.seconds for c in cancels if has_ended(c) and c.seconds is not None]),
        resisted=resisted,
        resistance=resisted / len(cancels) if cancels else 0.0,
    )


def grouped(
    cancels: Sequence[Cancellation], key: Callable[[Cancellation], str | None], none: str, slow: float
) -> tuple[GroupStats, ...]:
    """Statistics per value of `key` (None → `none`), most cancels first."""
    groups: dict[str, list[Cancellation]] = defaultdict(list)
    for c in cancels:
        groups[key(c) or none].append(c)
    stats = [group_stats(name, items, slow) for name, items in groups.items()]
    return tuple(sorted(stats, key=lambda g: (-g.requested, g.name)))


def histogram(seconds: Sequence[float]) -> tuple[Bucket, ...]:
    """Counts per bucket of `HISTOGRAM_EDGES`."""
    edges = (0.0, *HISTOGRAM_EDGES)
    counts = [0] * len(edges)
    for value in seconds:
        index = sum(1 for edge in HISTOGRAM_EDGES if value >= edge)
        counts[index] += 1
    buckets = []
    for i, lower in enumerate(edges):
        upper = edges[i + 1] if i + 1 < len(edges) else None
        label = f"<{_short(upper)}" if i == 0 else (f"≥{_short(lower)}" if upper is None else None)
        buckets.append(Bucket(label or f"{_short(lower)}–{_short(upper)}", lower, upper, counts[i]))
    return tuple(buckets)


def worst_offenders(by_deployment: Sequence[GroupStats], top: int) -> tuple[GroupStats, ...]:
    """Deployments with resisting cancels: most resisted first, then the highest share."""
    resisting = [g for g in by_deployment if g.resisted]
    return tuple(sorted(resisting, key=lambda g: (-g.resisted, -g.resistance, g.name))[:top])


# -- runs stuck now ------------------------------------------------------------------------


def order_stuck(stuck: Iterable[StuckRun]) -> tuple[StuckRun, ...]:
    """Longest in Cancelling first, then by name."""
    return tuple(sorted(stuck, key=lambda s: (-(s.flow_run.cancelling_for_seconds or 0), s.flow_run.name)))


def top_causes(stuck: Sequence[StuckRun], top: int) -> tuple[Tally, ...]:
    """Causes of the sampled stuck runs, most frequent first."""
    count = Counter(s.verdict.cause.value for s in stuck if s.verdict is not None)
    return tuple(Tally(value, n) for value, n in sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


def top_call_sites(stuck: Sequence[StuckRun], top: int) -> tuple[CallSite, ...]:
    """Blocking call sites of the stuck runs, most shared first."""
    sites: dict[tuple[str, str | None, int | None, str], list[str]] = defaultdict(list)
    for s in stuck:
        call = s.verdict.blocking_call if s.verdict else None
        if call is not None:
            sites[(call.function, call.filename, call.line, call.kind.value)].append(s.flow_run.name)
    ordered = sorted(sites.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1] or "", kv[0][2] or 0))
    return tuple(
        CallSite(f, file, line, kind, len(runs), tuple(runs)) for (f, file, line, kind), runs in ordered[:top]
    )


__all__ = [
    "HISTOGRAM_EDGES",
    "distribution",
    "group_stats",
    "grouped",
    "has_ended",
    "histogram",
    "order_stuck",
    "percentile",
    "top_call_sites",
    "top_causes",
    "worst_offenders",
]
