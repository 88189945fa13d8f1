"""Ordered, pure rules: what was read about a run → the verdict.

The first rule that matches wins. For a live flow process the question the
rules answer is: *what would keep this process from ending when it gets
SIGTERM?* If nothing would (its main thread sits in a call that a signal
interrupts), then no SIGTERM reached it: nothing acted on CANCELLING.

The rules live by the question they answer: `where` (what is left of the run and where),
`stuck` (a SIGTERM came, or would, and the process cannot stop), `unsent` (no SIGTERM came);
`verdicts` holds what they build with. This module orders them (`RULES`), weighs the verdict
against what would refute it (`refute`), and adds the kind's findings and the stop-now line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from prefect_cancel_doctor.core.remedies import resolve_line, stop_line
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.diagnose.stuck import (
    absorbed_unseen,
    event_loop_blocked,
    exception_swallowed,
    exit_blocked_by_thread,
    handler_starved,
    signal_ignored,
    signal_pending,
    uninterruptible,
    unwinding_held,
)
from prefect_cancel_doctor.diagnose.unsent import (
    cancel_not_observed,
    unknown,
)
from prefect_cancel_doctor.diagnose.verdicts import (
    stop_commands,
)
from prefect_cancel_doctor.diagnose.where import (
    cancellation_hook_hang,
    children_survive,
    infrastructure_gone,
    never_started,
    not_attachable,
    orphaned,
    pid1_no_forward,
)
from prefect_cancel_doctor.kinds.registry import kind_of
from prefect_cancel_doctor.model import (
    Cause,
    Delivery,
    Verdict,
)

Rule = Callable[[Evidence], Verdict | None]


RULES: tuple[Rule, ...] = (
    not_attachable,
    never_started,
    orphaned,
    cancellation_hook_hang,
    infrastructure_gone,
    children_survive,
    uninterruptible,
    pid1_no_forward,
    signal_ignored,
    handler_starved,
    exception_swallowed,
    unwinding_held,
    absorbed_unseen,
    exit_blocked_by_thread,
    event_loop_blocked,
    signal_pending,
    cancel_not_observed,
    unknown,
)


#: The highest confidence a verdict that no SIGTERM came may keep while a source that could
#: refute it was not read, or while a sign says one came.
_UNREAD_CEILING = 0.75


_CONFLICT_CEILING = 0.45


def refute(verdict: Verdict, delivery: Delivery | None) -> Verdict:
    """The last step: look for the evidence that would refute the verdict, and weigh it.

    Only `cancel_not_observed` for a live flow process says that no SIGTERM came. A sign that
    one came (a `kill` event, the pod Terminating, the pending flag, the flow's own log line)
    contradicts it: it drops below 0.5 and says what conflicts. A source that could have
    refuted it but was not read keeps it below 0.8, and says which.
    """
    if delivery is None:
        return verdict
    verdict = dataclasses.replace(verdict, delivery=delivery)
    if verdict.cause is not Cause.CANCEL_NOT_OBSERVED:
        return verdict
    if delivery.signs_for:
        conflicts = tuple(f"conflicts with 'no SIGTERM came': {sign}" for sign in delivery.signs_for)
        return dataclasses.replace(
            verdict,
            summary=f"{verdict.summary} Yet a sign says a SIGTERM did come ({delivery.signs_for[0]}): what "
            "absorbed it could not be read, so this verdict is uncertain.",
            confidence=min(verdict.confidence, _CONFLICT_CEILING),
            evidence=(*verdict.evidence, *conflicts),
        )
    if delivery.unread and verdict.confidence > _UNREAD_CEILING:
        unread = tuple(
            f"not read here, and it could refute 'no SIGTERM came': {what}" for what in delivery.unread
        )
        return dataclasses.replace(verdict, confidence=_UNREAD_CEILING, evidence=(*verdict.evidence, *unread))
    return verdict


def diagnose(ev: Evidence) -> Verdict:
    """Apply the rules in order; `unknown` always matches.

    The verdict's first fix is the doctor's own safe command that ends the run now (`resolve`),
    then the same by hand (`stop_now`), then the change that keeps it from happening again.
    """
    for rule in RULES:
        verdict = rule(ev)
        if verdict is not None:
            if ev.target is not None:  # what only the run's kind of target can say
                kind = kind_of(ev.target.kind)
                facts = kind.facts(ev.target, verdict.cause, runner_runs=ev.runner is not None)
                short = kind.short_fix(ev.target, verdict.cause) or verdict.short_fix
                fixes = kind.fixes(ev.target, verdict.cause)
                verdict = dataclasses.replace(
                    verdict,
                    evidence=verdict.evidence + facts,
                    short_fix=short,
                    remediation=verdict.remediation if fixes is None else fixes,
                )
            verdict = refute(verdict, ev.delivery)
            commands = stop_commands(ev, verdict.cause)
            if commands:
                first = (resolve_line(ev.run.id, ev.run.name),) if ev.run is not None else ()
                remediation = (*first, stop_line(commands), *verdict.remediation)
                verdict = dataclasses.replace(verdict, stop_now=commands, remediation=remediation)
            return verdict
    raise AssertionError("the last rule always matches")  # pragma: no cover
