"""Reading the cancellation history of a window from the Prefect API.

`read_cancellations(api, since, until, cancelling_now)` returns one
`Cancellation` per cancel requested in the window (a run that entered
Cancelling), with what ended it. The cost follows the number of cancelled
runs, not the size of the history:

1. How many `prefect.flow-run.Cancelling` events each run has in the window,
   and when (`POST /events/count-by/resource`: one request, a row per run).
   A run in Cancelling now (the runs `scan` lists anyway), counted once, whose
   state has the time of that event, has been in Cancelling since its one
   request: the run says what its event would (the server stamps the event
   with the state's timestamp), and nothing ended that cancel. On a fleet
   with thousands stuck, that is nearly every cancel of the window.
   Any other run counted once was asked once, at the time its count says.
2. The Cancelling events of the runs counted more than once (`POST
   /events/filter`, by resource id, 50 runs a query), to tell a second request
   from a Cancelling state forced again (the server refuses Cancelling →
   Cancelling unless forced); where the server cannot count events, every
   Cancelling event of the window (50 a page, a busy window in slices).
3. Those runs (`POST /flow_runs/filter` by id, 200 a page): current state,
   worker label, infrastructure; the runs in Cancelling now are not read again.
4. How many end events (`Cancelled`, `Completed`, `Failed`, `Crashed`,
   `TimedOut`) each of them has in the window (`count-by/resource`, 200 runs a
   request): a run asked once whose only end event has its current state's
   time ended that cancel in the state it is in, which its record tells. The
   others' end events are read, by resource id, 50 runs a query.
5. Only for a run whose end is not among those events (a custom state name, a
   reschedule, an event not stored yet): its state history
   (`GET /flow_run_states/`).

A server without an events API is read from its runs instead: the Cancelled
runs of the window and their state histories, a request per run, blind to
cancels that were ignored.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from prefect_cancel_doctor.clients.prefect_api import (
    EVENTS_IDS_PER_QUERY,
    EventCount,
    EventsUnavailable,
    PrefectApi,
)
from prefect_cancel_doctor.clients.prefect_records import Event, FlowRun, State, parse_time
from prefect_cancel_doctor.health.model import Cancellation, Outcome
from prefect_cancel_doctor.model import FINAL_STATES, StateType

#: How the server's cancelling timeout words the state it sets (Prefect ≥ 3.7.5).
TIMEOUT_MESSAGE_PREFIX = "Flow run cancellation timed out"

#: State events that can end a cancel. Anything else is found in the run's state history.
END_EVENT_PREFIXES = (
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.TimedOut",
)
_CANCELLING_EVENT = "prefect.flow-run.Cancelling"
#: Cancelling events read in one paged query at most; a busier window is cut in halves.
SLICE_EVENTS = 2000
#: Runs whose end events one count asks for (`POST /events/count-by/resource`: one answer, no page
#: token to carry the filter, so more ids than an events query takes).
RUNS_PER_COUNT = 200
_RUN_RESOURCE = "prefect.flow-run."
#: The runs in Cancelling now, when they are needed (the same list at each call).
Listing = Callable[[], Sequence[FlowRun]]


@dataclass(frozen=True)
class StateEvent:
    """A flow run state change, from an event or from the run's state history."""

    run_id: str
    occurred: datetime
    state_type: str
    state_name: str
    message: str | None
    #: The state the run left (events only).
    from_type: str | None = None
    run_name: str | None = None
    #: Names of related resources by role ("flow", "deployment", "work-pool", "work-queue").
    related: tuple[tuple[str, str], ...] = ()


def state_event(event: Event) -> StateEvent | None:
    """A `prefect.flow-run.<State>` event as a StateEvent (None for anything else)."""
    resource = event.resource
    resource_id = resource.get("prefect.resource.id") or ""
    state_type = resource.get("prefect.state-type")
    occurred = parse_time(event.occurred)
    if not resource_id.startswith(_RUN_RESOURCE) or not state_type or occurred is None:
        return None
    related = tuple(
        (r["prefect.resource.role"], r["prefect.resource.name"])
        for r in event.related
        if r.get("prefect.resource.role") and r.get("prefect.resource.name")
    )
    return StateEvent(
        run_id=resource_id[len(_RUN_RESOURCE) :],
        occurred=occurred,
        state_type=state_type,
        state_name=resource.get("prefect.state-name") or state_type.title(),
        message=event.validated_message or resource.get("prefect.state-message") or None,
        from_type=event.initial_state_type,
        run_name=resource.get("prefect.resource.name"),
        related=related,
    )


def history_events(run_id: str, states: Iterable[State]) -> list[StateEvent]:
    """A run's state history (`GET /flow_run_states/`) as StateEvents, oldest first."""
    events = []
    previous = None
    for state in sorted(states, key=lambda s: s.timestamp or ""):
        occurred = parse_time(state.timestamp)
        if occurred is None:
            continue
        events.append(
            StateEvent(
                run_id,
                occurred,
                state.type,
                state.name or state.type.title(),
                state.message,
                from_type=previous,
            )
        )
        previous = state.type
    return events


def cancel_requests(events: Iterable[StateEvent]) -> dict[str, list[StateEvent]]:
    """Run id → the times it entered Cancelling, oldest first (Cancelling → Cancelling is one request)."""
    requests: dict[str, list[StateEvent]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.occurred):
        if event.state_type == StateType.CANCELLING and event.from_type != StateType.CANCELLING:
            requests[event.run_id].append(event)
    return dict(requests)


def end_of(request: StateEvent, later: Sequence[StateEvent], until: datetime | None) -> StateEvent | None:
    """The first state after `request` (and before `until`) that is not Cancelling."""
    for event in sorted(later, key=lambda e: e.occurred):
        if event.occurred <= request.occurred or event.state_type == StateType.CANCELLING:
            continue
        if until is not None and event.occurred >= until:
            return None
        return event
    return None


def outcome_of(end: StateEvent) -> Outcome:
    """How a cancel ended, from the state that ended it."""
    if end.state_type == StateType.CANCELLED:
        timed_out = (end.message or "").startswith(TIMEOUT_MESSAGE_PREFIX)
        return Outcome.TIMED_OUT if timed_out else Outcome.CANCELLED
    if end.state_type in FINAL_STATES:
        return Outcome.IGNORED
    return Outcome.OTHER


@dataclass
class _RunInfo:
    """What is known of one run from its events and the runs API."""

    name: str
    deployment: str | None = None
    work_pool: str | None = None
    worker: str | None = None
    infrastructure_pid: str | None = None
    state_type: str | None = None
    state_timestamp: datetime | None = None


@dataclass
class _Reader:
    api: PrefectApi
    since: datetime
    until: datetime
    progress: Callable[[str, int, int], None]
    cancelling_events: int = 0
    end_events: int = 0
    runs_read: int = 0
    history_reads: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    #: Run id → (related resources, run name) from its Cancelling event.
    _related: dict[str, tuple[tuple[tuple[str, str], ...], str | None]] = dataclasses.field(
        default_factory=dict
    )
    _infos: dict[str, _RunInfo] = dataclasses.field(default_factory=dict)
    _flow_names: dict[str, str] = dataclasses.field(default_factory=dict)
    _deployment_names: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Runs with a Cancelling event in the window (event counts).
    _counted: set[str] = dataclasses.field(default_factory=set)
    #: Runs with exactly one Cancelling event in the window: that request, from its count.
    _once: dict[str, StateEvent] = dataclasses.field(default_factory=dict)
    #: Runs read by id (`_runs`), and every id asked for (a deleted run is asked once).
    _records: dict[str, FlowRun] = dataclasses.field(default_factory=dict)
    _asked: set[str] = dataclasses.field(default_factory=set)

    def _window(self) -> dict[str, str]:
        return {"since": iso(self.since), "until": iso(self.until)}

    def read(self, listing: Listing) -> tuple[list[Cancellation], dict[str, FlowRun], str]:
        """Every cancel requested in the window: (cancels, runs by id, method)."""
        try:
            requests, ends, method = self._from_events(listing)
        except EventsUnavailable:
            requests, ends, method = self._from_runs()
            self.notes.append(
                "this server has no events API: cancels were read from the Cancelled runs of the window "
                "and their state histories; ignored cancels cannot be seen that way"
            )
        # A run that entered Cancelling moments ago may not have its event stored yet
        # (the server persists events in batches, every few seconds).
        unstored = 0
        cancelling_now = listing()
        for run in cancelling_now:
            entered = parse_time(run.state.timestamp if run.state else None)
            if run.id in requests or entered is None or entered < self.since:
                continue
            requests[run.id] = [StateEvent(run.id, entered, StateType.CANCELLING, "Cancelling", None)]
            unstored += 1
        if unstored and method == "events":
            self.notes.append(
                f"{unstored} run(s) entered Cancelling too recently for their event to be stored"
            )
        runs = self._runs(set(requests), cancelling_now)
        self.runs_read = len(runs)
        self._names(runs.values())
        cancels: list[Cancellation] = []
        needs_history: list[tuple[str, StateEvent, StateEvent | None]] = []
        for run_id, attempts in requests.items():
            for i, request in enumerate(attempts):
                before = attempts[i + 1].occurred if i + 1 < len(attempts) else None
                end = end_of(request, ends.get(run_id, ()), before)
                if end is None:
                    needs_history.append(
                        (run_id, request, attempts[i + 1] if i + 1 < len(attempts) else None)
                    )
                    continue
                cancels.append(self._cancellation(run_id, request, end, runs.get(run_id), attempts))
        self._resolve_from_history(needs_history, runs, requests, cancels)
        cancels.sort(key=lambda c: c.requested_at)
        return cancels, runs, method

    # -- the events path

    def _from_events(
        self, listing: Listing
    ) -> tuple[dict[str, list[StateEvent]], dict[str, list[StateEvent]], str]:
        self.progress("reading Cancelling events", 0, 0)
        settled = self._settled(listing)
        if settled is None:
            # No event counts: every Cancelling event of the window, read whole.
            unique = {e.id: e for e in self._cancelling_events(self.since, self.until)}
            settled, once = {}, {}
        else:
            once = {run_id: e for run_id, e in self._once.items() if run_id not in settled}
            unread = sorted(self._counted - set(settled) - set(once))
            unique = {e.id: e for e in self._cancelling_events_of(unread)}
        events = [
            e
            for e in (state_event(raw) for raw in unique.values())
            if e and e.state_type == StateType.CANCELLING
        ]
        self.cancelling_events = len(events) + len(settled) + len(once)
        self._related = {e.run_id: (e.related, e.run_name) for e in events}
        requests = cancel_requests(events)
        requests.update((run_id, [request]) for run_id, request in {**once, **settled}.items())
        # A run in Cancelling since its only request of the window has no end to look for.
        ids = sorted(set(requests) - set(settled) - _unended(requests, listing()))
        ends: dict[str, list[StateEvent]] = defaultdict(list)
        for run_id, end in self._ended_as_they_are(ids, requests, listing()).items():
            ends[run_id].append(end)
        ids = [run_id for run_id in ids if run_id not in ends]
        for start in range(0, len(ids), EVENTS_IDS_PER_QUERY):
            self.progress("reading the events that ended them", start, len(ids))
            chunk = ids[start : start + EVENTS_IDS_PER_QUERY]
            query = {
                **self._filter(),
                "event": {"prefix": list(END_EVENT_PREFIXES)},
                "resource": {"id": [_RUN_RESOURCE + run_id for run_id in chunk]},
            }
            for raw in self.api.events(query):
                event = state_event(raw)
                if event is not None:
                    ends[event.run_id].append(event)
                    self.end_events += 1
        return requests, dict(ends), "events"

    def _ended_as_they_are(
        self, ids: Sequence[str], requests: dict[str, list[StateEvent]], cancelling_now: Sequence[FlowRun]
    ) -> dict[str, StateEvent]:
        """Runs whose cancel ended in the state they are in now: that end, from the run.

        One request per 200 runs counts their end events of the window (`Cancelled`,
        `Completed`, `Failed`, `Crashed`, `TimedOut`). A run asked to cancel once whose only
        end event has the time of its current state, after the request, ended that cancel in
        that state: its record (read for its worker anyway) gives the state's type, name and
        message, as its event would. The others' end events are read.
        """
        counts: dict[str, EventCount] = {}
        for start in range(0, len(ids), RUNS_PER_COUNT):
            self.progress("counting the events that ended them", start, len(ids))
            chunk = ids[start : start + RUNS_PER_COUNT]
            query = {
                "occurred": self._window(),
                "event": {"prefix": list(END_EVENT_PREFIXES)},
                "resource": {"id": [_RUN_RESOURCE + run_id for run_id in chunk]},
            }
            try:
                rows = self.api.event_counts("resource", query)
            except EventsUnavailable:
                return {}
            counts.update((c.value[len(_RUN_RESOURCE) :], c) for c in rows)
        records = self._runs(set(ids), cancelling_now)
        known: dict[str, StateEvent] = {}
        for run_id in ids:
            run, count, attempts = records.get(run_id), counts.get(run_id), requests[run_id]
            state = run.state if run else None
            if state is None or count is None or count.count != 1 or len(attempts) != 1:
                continue
            ended, counted = parse_time(state.timestamp), parse_time(count.start_time)
            if (
                state.type in FINAL_STATES
                and ended is not None
                and counted is not None
                and abs((ended - counted).total_seconds()) < 0.001
                and ended > attempts[0].occurred
            ):
                name = state.name or state.type.title()
                known[run_id] = StateEvent(run_id, ended, state.type, name, state.message)
        return known

    def _settled(self, listing: Listing) -> dict[str, StateEvent] | None:
        """Runs in Cancelling since their only Cancelling event of the window: that request, from the run.

        One request counts the window's Cancelling events per run (`POST
        /events/count-by/resource`: the count and when the oldest and newest
        occurred). The server stamps a state change's event with the state's
        timestamp, so a run in Cancelling now, counted once, whose state has
        the time of that event entered Cancelling then and has not left it:
        the run itself says all its event would (its flow, deployment and
        pool), and no event can have ended that cancel. None where the server
        cannot count events.

        Any other run counted once was asked to cancel once, at the time its
        count says (`_once`): its record (read for its end anyway) names its
        flow, deployment and pool. Only the Cancelling events of runs counted
        more than once are read, to tell a second request from a state
        proposed again while in Cancelling.
        """
        query = {"occurred": self._window(), "event": {"prefix": [_CANCELLING_EVENT]}}
        try:
            counts = self.api.event_counts("resource", query)
        except EventsUnavailable:
            return None
        self._counted = {c.value[len(_RUN_RESOURCE) :] for c in counts if c.value.startswith(_RUN_RESOURCE)}
        for count in counts:
            occurred = parse_time(count.start_time)
            if count.count == 1 and occurred is not None and count.value.startswith(_RUN_RESOURCE):
                run_id = count.value[len(_RUN_RESOURCE) :]
                self._once[run_id] = StateEvent(
                    run_id, occurred, StateType.CANCELLING, "Cancelling", None, run_name=count.label or None
                )
        # Asked for only now: the count goes out while the runs in Cancelling are still being listed.
        stuck = {r.id: r for r in listing() if r.state_type == StateType.CANCELLING and r.state}
        settled: dict[str, StateEvent] = {}
        for count in counts:
            run = stuck.get(count.value[len(_RUN_RESOURCE) :])
            if run is None or run.state is None or count.count != 1:
                continue
            entered, occurred = parse_time(run.state.timestamp), parse_time(count.start_time)
            if entered is None or occurred is None or abs((entered - occurred).total_seconds()) >= 0.001:
                continue
            settled[run.id] = StateEvent(
                run.id,
                occurred,
                StateType.CANCELLING,
                run.state.name or "Cancelling",
                None,
                run_name=run.name,
            )
        return settled

    def _cancelling_events_of(self, run_ids: Sequence[str]) -> list[Event]:
        """The Cancelling events of the window of these runs, asked for by resource id."""
        events: list[Event] = []
        for start in range(0, len(run_ids), EVENTS_IDS_PER_QUERY):
            self.progress("reading Cancelling events", start, len(run_ids))
            chunk = run_ids[start : start + EVENTS_IDS_PER_QUERY]
            query = {
                **self._filter(),
                "event": {"prefix": [_CANCELLING_EVENT]},
                "resource": {"id": [_RUN_RESOURCE + run_id for run_id in chunk]},
            }
            events.extend(self.api.events(query))
        return events

    def _cancelling_events(self, since: datetime, until: datetime, depth: int = 0) -> list[Event]:
        """The Cancelling events of [since, until], in slices of at most `SLICE_EVENTS` each.

        The server pages by offset, counting the whole match for each page: a
        slice keeps every offset (and the work per page) small however many
        runs were cancelled. Slice bounds are inclusive on both ends: callers
        drop the events read twice by id.
        """
        totals: list[int] = []
        query = {
            "occurred": {"since": iso(since), "until": iso(until)},
            "order": "ASC",
            "event": {"prefix": [_CANCELLING_EVENT]},
        }
        pages = self.api.events(query, totals.append)
        events: list[Event] = []
        for raw in pages:
            if totals[0] > SLICE_EVENTS and depth < 16 and until - since > timedelta(seconds=2):
                pages.close()
                middle = since + (until - since) / 2
                return self._cancelling_events(since, middle, depth + 1) + self._cancelling_events(
                    middle, until, depth + 1
                )
            events.append(raw)
            if len(events) % 500 == 0:
                self.progress("reading Cancelling events", len(events), 0)
        return events

    def _filter(self) -> dict[str, object]:
        return {"occurred": self._window(), "order": "ASC"}

    # -- the fallback without events

    def _from_runs(self) -> tuple[dict[str, list[StateEvent]], dict[str, list[StateEvent]], str]:
        candidates = self.api.runs_by_filter(
            {"state": {"type": {"any_": [StateType.CANCELLED]}}, "end_time": {"after_": iso(self.since)}}
        )
        requests: dict[str, list[StateEvent]] = {}
        ends: dict[str, list[StateEvent]] = {}
        for n, run in enumerate(candidates):
            self.progress("reading state histories", n, len(candidates))
            history = history_events(run.id, self.api.state_history(run.id))
            self.history_reads += 1
            in_window = [e for e in cancel_requests(history).get(run.id, []) if e.occurred >= self.since]
            if in_window:
                requests[run.id] = in_window
                ends[run.id] = [e for e in history if e.state_type != StateType.CANCELLING]
        return requests, ends, "runs"

    # -- runs, and the ends the events did not show

    def _runs(self, ids: set[str], cancelling_now: Sequence[FlowRun] = ()) -> dict[str, FlowRun]:
        """These runs, each asked for once: the runs in Cancelling now were just read whole."""
        runs: dict[str, FlowRun] = {r.id: r for r in cancelling_now if r.id in ids}
        runs.update((run_id, run) for run_id, run in self._records.items() if run_id in ids)
        wanted = sorted(ids - set(runs) - self._asked)
        self._asked.update(wanted)
        for start in range(0, len(wanted), 200):
            self.progress("reading the cancelled runs", start, len(wanted))
            for run in self.api.runs_by_filter({"id": {"any_": wanted[start : start + 200]}}):
                runs[run.id] = self._records[run.id] = run
        return runs

    def _names(self, runs: Iterable[FlowRun]) -> None:
        # Runs whose Cancelling event was not read have no related names: look them up.
        runs = [r for r in runs if r.id not in self._related]
        self._flow_names = self.api.names("flows", (r.flow_id for r in runs)) if runs else {}
        self._deployment_names = (
            self.api.names("deployments", (r.deployment_id for r in runs)) if runs else {}
        )

    def info(self, run_id: str, run: FlowRun | None) -> _RunInfo:
        """Names of the run's deployment, pool and worker: from its events, else from the run."""
        if run_id in self._infos:
            return self._infos[run_id]
        related, event_name = self._related.get(run_id, ((), None))
        roles = dict(related)
        flow = roles.get("flow")
        deployment = roles.get("deployment")
        if run is not None and not related:
            flow = self._flow_names.get(run.flow_id or "")
            deployment = self._deployment_names.get(run.deployment_id or "")
        state = run.state if run else None
        info = _RunInfo(
            name=run.name if run else event_name or run_id,
            deployment=f"{flow or '?'}/{deployment}" if deployment else None,
            work_pool=roles.get("work-pool") or (run.work_pool_name if run else None),
            worker=run.label("prefect.worker.name") if run else None,
            infrastructure_pid=run.infrastructure_pid if run else None,
            state_type=state.type if state else None,
            state_timestamp=parse_time(state.timestamp if state else None),
        )
        self._infos[run_id] = info
        return info

    def _cancellation(
        self,
        run_id: str,
        request: StateEvent,
        end: StateEvent | None,
        run: FlowRun | None,
        attempts: Sequence[StateEvent],
    ) -> Cancellation:
        info = self.info(run_id, run)
        base = Cancellation(
            flow_run_id=run_id,
            flow_run_name=info.name,
            deployment=info.deployment,
            work_pool=info.work_pool,
            worker=info.worker,
            requested_at=iso(request.occurred),
            outcome=Outcome.OTHER,
            infrastructure_pid=info.infrastructure_pid,
        )
        if end is None:
            if info.state_type == StateType.CANCELLING and request is attempts[-1]:
                seconds = (self.until - request.occurred).total_seconds()
                return dataclasses.replace(base, outcome=Outcome.CANCELLING, seconds=seconds)
            return base
        return dataclasses.replace(
            base,
            outcome=outcome_of(end),
            ended_at=iso(end.occurred),
            end_state_type=end.state_type,
            end_state_name=end.state_name,
            end_message=end.message,
            seconds=(end.occurred - request.occurred).total_seconds(),
        )

    def _resolve_from_history(
        self,
        pending: list[tuple[str, StateEvent, StateEvent | None]],
        runs: dict[str, FlowRun],
        requests: dict[str, list[StateEvent]],
        cancels: list[Cancellation],
    ) -> None:
        histories: dict[str, list[StateEvent]] = {}
        for n, (run_id, request, following) in enumerate(pending):
            run = runs.get(run_id)
            still = run is not None and run.state_type == StateType.CANCELLING and following is None
            if still or run is None:
                # Still Cancelling (the common case), or deleted: no history to read.
                cancels.append(self._cancellation(run_id, request, None, run, requests[run_id]))
                continue
            if run_id not in histories:
                self.progress("reading state histories", n, len(pending))
                histories[run_id] = history_events(run_id, self.api.state_history(run_id))
                self.history_reads += 1
            until = following.occurred if following else None
            end = end_of(request, histories[run_id], until)
            cancels.append(self._cancellation(run_id, request, end, run, requests[run_id]))


def _unended(requests: dict[str, list[StateEvent]], cancelling_now: Iterable[FlowRun]) -> set[str]:
    """Runs in Cancelling now that entered it at their only request of the window.

    The server stamps a state change's event with the new state's timestamp, so
    a run whose current Cancelling state has the time of its one request has not
    left Cancelling since: no event can have ended that cancel. (A run that
    left and came back, its new Cancelling event not stored yet, has a later
    timestamp: its ends are read.)
    """
    unended = set()
    for run in cancelling_now:
        attempts = requests.get(run.id)
        entered = parse_time(run.state.timestamp if run.state else None)
        if (
            attempts is None
            or len(attempts) != 1
            or entered is None
            or run.state_type != StateType.CANCELLING
        ):
            continue
        if abs((entered - attempts[0].occurred).total_seconds()) < 0.001:
            unended.add(run.id)
    return unended


def iso(moment: datetime) -> str:
    """An aware datetime as ISO 8601 in UTC, with a Z."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class History:
    """The cancels of a window, and how they were read."""

    cancels: tuple[Cancellation, ...]
    #: The cancelled runs as the API returns them now, by id.
    runs: dict[str, FlowRun]
    #: "events" or "runs" (no events API).
    method: str
    cancelling_events: int
    end_events: int
    runs_read: int
    history_reads: int
    notes: tuple[str, ...]


def read_cancellations(
    api: PrefectApi,
    since: datetime,
    until: datetime,
    cancelling_now: Listing,
    progress: Callable[[str, int, int], None] = lambda what, done, total: None,
) -> History:
    """Every cancel requested between `since` and `until`, and what became of it.

    `cancelling_now` (the runs in Cancelling now, asked for once the window's events are counted:
    a `Future`'s `result` lets them be listed meanwhile) covers cancels too recent for
    their event to be stored yet.
    """
    reader = _Reader(api, since, until, progress)
    cancels, runs, method = reader.read(cancelling_now)
    return History(
        tuple(cancels),
        runs,
        method,
        reader.cancelling_events,
        reader.end_events,
        reader.runs_read,
        reader.history_reads,
        tuple(reader.notes),
    )


__all__ = [
    "END_EVENT_PREFIXES",
    "TIMEOUT_MESSAGE_PREFIX",
    "History",
    "StateEvent",
    "cancel_requests",
    "end_of",
    "history_events",
    "iso",
    "outcome_of",
    "read_cancellations",
    "state_event",
]
