"""The verdict on a run and the report of a command: what `Report.to_dict()` serialises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_cancel_doctor.model.causes import Cause
from prefect_cancel_doctor.model.runs import FlowRunRef
from prefect_cancel_doctor.model.samples import Resource
from prefect_cancel_doctor.model.targets import Target
from prefect_cancel_doctor.model.vocabulary import Absorber, CallKind, Delivered, StateType, TimelineSource

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Delivery:
    """The judgement on whether a SIGTERM came, with the signs for and against it."""

    sigterm: Delivered
    #: Where it went, where the process did not end on it (None: unknown, or none came).
    absorbed_by: Absorber | None = None
    #: Facts that show a SIGTERM came (a `kill` event, the pod Terminating, the pending flag, a log line).
    signs_for: tuple[str, ...] = ()
    #: Facts that show none came (the control channel still open, the pending flag clear in a C call).
    signs_against: tuple[str, ...] = ()
    #: Sources that could speak but could not be read here (the handler of a CPython 3.12+ target).
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockingCall:
    """What the flow is doing right now: the call that holds cancellation up."""

    kind: CallKind
    function: str
    filename: str | None
    line: int | None
    code: str | None
    thread_name: str | None
    native: str | None
    on_event_loop: bool
    #: True if the same call was on top in every sample; False means it moved.
    stable: bool = True
    #: The process the thread belongs to.
    pid: int | None = None
    #: py-spy's id of the thread (`ThreadSample.thread_id`): names may repeat or be missing.
    thread_id: int | None = None
    #: What the call waits on, read from the kernel (fd, FIFO, pipe writer, socket peer, mount).
    resource: Resource | None = None


@dataclass(frozen=True)
class Verdict:
    """The diagnosis of one run: cause, blocking call, and what to do."""

    cause: Cause
    summary: str
    confidence: float
    blocking_call: BlockingCall | None = None
    evidence: tuple[str, ...] = ()
    remediation: tuple[str, ...] = ()
    #: The first fix in a few words, for tables (the full fixes are `remediation`).
    short_fix: str = ""
    #: What ends the run now, as shell commands to run in order on this host (empty where
    #: nothing safe can be done from here): stop its processes, then mark it Cancelled.
    stop_now: tuple[str, ...] = ()
    #: Secondary findings: what will hold the cancel up next, once the first cause is fixed
    #: (e.g. a C call that will keep a SIGTERM pending, when no SIGTERM has come yet).
    also: tuple[Verdict, ...] = ()
    #: Whether a SIGTERM came, and where it went: the signs weighed (None where no process was read).
    delivery: Delivery | None = None


@dataclass(frozen=True)
class TimelineEntry:
    """One dated fact of a run's story: the order of events, not only the conclusion."""

    #: ISO 8601 time, UTC, to the second.
    at: str
    what: str
    source: TimelineSource


@dataclass(frozen=True)
class Published:
    """Where a verdict read from the fleet's events comes from: another host's doctor (fleet.py)."""

    #: The host whose doctor diagnosed the run (its `prefect-cancel-doctor.host.<host>` resource).
    host: str
    #: When it published the verdict (ISO 8601, UTC).
    published_at: str
    #: Seconds between its publication and this report.
    age_seconds: float | None
    #: Whether that host found something of the run (processes, a container) to sample.
    found_there: bool
    #: The version of the doctor that published it.
    doctor_version: str | None
    #: The event's id (`prefect-cancel-doctor.verdict`).
    event_id: str


@dataclass(frozen=True)
class Diagnosis:
    """One run: what the API said, where it lives, and the verdict."""

    flow_run: FlowRunRef | None
    target: Target | None
    verdict: Verdict
    errors: tuple[str, ...] = ()
    #: When the run entered each state, its worker's last heartbeat, when its processes
    #: started, what its logs said about the cancel; oldest first.
    timeline: tuple[TimelineEntry, ...] = ()
    #: The run's page in the Prefect UI (None for a process inspected without the API).
    ui_url: str | None = None
    #: Set when the verdict is another host's, read from its published event (None: diagnosed here).
    published: Published | None = None

    @property
    def needs_attention(self) -> bool:
        """Stuck in Cancelling, an orphan, or a process inspected directly."""
        if self.flow_run is None or self.flow_run.state_type == StateType.CANCELLING:
            return True
        return bool(self.target and self.target.processes)


@dataclass(frozen=True)
class Report:
    """Everything one command found."""

    api_url: str | None
    generated_at: str
    runs: tuple[Diagnosis, ...]
    errors: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @property
    def needs_attention(self) -> bool:
        """True when a run is stuck in Cancelling or something of a finished run still runs."""
        return any(d.needs_attention for d in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: the model as plain dicts, enums as their values."""
        from prefect_cancel_doctor.model.serialise import to_plain  # serialise reads this module's classes

        plain: dict[str, Any] = to_plain(self)
        # The version first: a reader checks it before anything else.
        return {"schema_version": plain.pop("schema_version"), **plain}
