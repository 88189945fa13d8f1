"""Why a cancellation has not completed: `Cause`, and what each cause lets the doctor do (`TRAITS`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from prefect_cancel_doctor.model.vocabulary import StrEnum


class Cause(StrEnum):
    """Why cancellation of a run has not completed (docs/how-cancellation-works.md, section 5)."""

    CANCEL_NOT_OBSERVED = "cancel_not_observed"
    SIGNAL_IGNORED = "signal_ignored"
    SIGNAL_PENDING = "signal_pending"
    EXIT_BLOCKED_BY_THREAD = "exit_blocked_by_thread"
    EVENT_LOOP_BLOCKED = "event_loop_blocked"
    PID1_NO_FORWARD = "pid1_no_forward"
    UNINTERRUPTIBLE_IO = "uninterruptible_io"
    CHILD_PROCESS_SURVIVES = "child_process_survives"
    CANCELLATION_HOOK_HANG = "cancellation_hook_hang"
    NEVER_STARTED = "never_started"
    INFRASTRUCTURE_GONE = "infrastructure_gone"
    ORPHANED_INFRASTRUCTURE = "orphaned_infrastructure"
    NOT_ATTACHABLE = "not_attachable"
    UNKNOWN = "unknown"

    @property
    def allows_action(self) -> bool:
        """Whether something safe can be done from here: `stop_now` commands, a `resolve` plan."""
        return TRAITS[self].allows_action

    @property
    def sigterm_useless(self) -> bool:
        """Whether the run's processes will not act on a SIGTERM sent to them: straight to SIGKILL."""
        return TRAITS[self].sigterm_useless

    @property
    def inconclusive(self) -> bool:
        """Whether the verdict says only that this host could not tell: another host's verdict on
        the run (published to the fleet) is worth more."""
        return TRAITS[self].inconclusive


@dataclass(frozen=True)
class CauseTraits:
    """What a cause lets the doctor do, read by the rules, `resolve` and the renderers alike."""

    allows_action: bool = True
    sigterm_useless: bool = False
    inconclusive: bool = False


#: Every cause's traits. PID1_NO_FORWARD is not `sigterm_useless`: its PID 1 drops the SIGTERM
#: sent to the container, but the doctor signals the flow engine itself, by its host PID.
TRAITS: Mapping[Cause, CauseTraits] = MappingProxyType(
    {
        Cause.CANCEL_NOT_OBSERVED: CauseTraits(),
        Cause.SIGNAL_IGNORED: CauseTraits(sigterm_useless=True),
        Cause.SIGNAL_PENDING: CauseTraits(sigterm_useless=True),
        Cause.EXIT_BLOCKED_BY_THREAD: CauseTraits(),
        Cause.EVENT_LOOP_BLOCKED: CauseTraits(),
        Cause.PID1_NO_FORWARD: CauseTraits(),
        # Not even SIGKILL acts until the I/O returns.
        Cause.UNINTERRUPTIBLE_IO: CauseTraits(allows_action=False),
        Cause.CHILD_PROCESS_SURVIVES: CauseTraits(),
        Cause.CANCELLATION_HOOK_HANG: CauseTraits(),
        Cause.NEVER_STARTED: CauseTraits(),
        Cause.INFRASTRUCTURE_GONE: CauseTraits(),
        Cause.ORPHANED_INFRASTRUCTURE: CauseTraits(),
        Cause.NOT_ATTACHABLE: CauseTraits(allows_action=False, inconclusive=True),
        Cause.UNKNOWN: CauseTraits(allows_action=False, inconclusive=True),
    }
)
