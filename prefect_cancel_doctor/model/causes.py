"""Why a cancellation has not completed: `Cause`."""

from __future__ import annotations

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
