"""Rules for a flow process that got (or would get) SIGTERM and cannot stop: an uninterruptible call,
SIGTERM ignored or absorbed (a handler, an `except`), a starved handler, a thread that blocks exit,
a blocked event loop, a pending signal."""

from __future__ import annotations

import dataclasses

from prefect_cancel_doctor.diagnose.delivery import (
    control_channel,
    gil_holder,
    main_thread,
)
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.diagnose.unsent import none_came_first
from prefect_cancel_doctor.diagnose.verdicts import (
    SIGTERM,
    describe_thread,
    has_signal,
    make_verdict,
    socket_facts,
)
from prefect_cancel_doctor.model import (
    CallKind,
    Cause,
    Delivered,
    HandlerKind,
    StateType,
    Verdict,
)
from prefect_cancel_doctor.sample.threads import thread_views


def uninterruptible(ev: Evidence) -> Verdict | None:
    """A thread in state D: not even SIGKILL acts until the I/O returns."""
    for process in ev.processes:
        for view in thread_views(process):
            if view.kernel is not None and view.kernel.state == "D":
                return make_verdict(
                    Cause.UNINTERRUPTIBLE_IO,
                    f"Thread {view.name or view.native_id} of process {process.pid} is in "
                    "uninterruptible I/O (state D); no signal acts until it returns.",
                    0.85,
                    [*ev.notes, describe_thread(view)],
                    view,
                )
    return None


def signal_ignored(ev: Evidence) -> Verdict | None:
    """SIGTERM is ignored or blocked by the flow process, or caught by a handler of its own that returns."""
    engine = ev.engine
    if engine is None or engine.proc is None:
        return None
    proc = engine.proc
    main = main_thread(engine)
    main_kernel = main.kernel if main else None
    handler = engine.sigterm_handler
    own_handler = handler is not None and handler.kind is HandlerKind.OTHER
    if has_signal(proc.sig_ignored, SIGTERM):
        how = "ignored (SIG_IGN)"
    elif main_kernel is not None and has_signal(main_kernel.sig_blocked, SIGTERM):
        how = "blocked in the main thread's signal mask"
    elif own_handler and handler is not None:
        how = f"caught by a handler of the flow's own, {handler.where()}, in place of Prefect's"
    else:
        return None
    evidence = [*ev.notes, f"/proc/{proc.pid}/status: SIGTERM is {how} (SigIgn={proc.sig_ignored:016x})"]
    if own_handler:
        evidence[-1] = (
            "the interpreter's SIGTERM handler (read from its memory) is "
            f"{handler.where() if handler else '?'}, "
            "not Prefect's: a SIGTERM runs it instead of raising TerminationSignal, and the flow goes on "
            "when it returns"
        )
    if has_signal(proc.sig_pending, SIGTERM) or has_signal(proc.shared_pending, SIGTERM):
        evidence.append("a SIGTERM is pending in the kernel")
    if main is not None:
        evidence.append(describe_thread(main))
    delivery = ev.delivery
    came = delivery is not None and delivery.sigterm is Delivered.YES
    summary = f"The flow process {proc.pid} has SIGTERM {how}, so the cancel cannot stop it" + (
        f"; it sits in {main.where()}." if main else "."
    )
    if own_handler and came:
        summary = (
            f"A SIGTERM came and the flow's own handler {handler.where() if handler else '?'} "
            "returned, so the "
            f"flow process {proc.pid} went on" + (f"; it sits in {main.where()}." if main else ".")
        )
    ignored = make_verdict(
        Cause.SIGNAL_IGNORED,
        summary,
        0.95 if not own_handler or came else 0.85,
        evidence,
        main,
    )
    if own_handler:
        ignored = dataclasses.replace(
            ignored,
            remediation=_HANDLER_FIXES,
            short_fix="end the run in its SIGTERM handler",
        )
    if not own_handler or came or delivery is None or delivery.sigterm is not Delivered.NO or main is None:
        return ignored
    # The handler would absorb a SIGTERM, but the signs say none came yet: that comes first.
    later = dataclasses.replace(
        ignored,
        summary=f"Once a SIGTERM comes, the flow's own handler {handler.where() if handler else '?'} will "
        "catch it and return: the flow goes on.",
    )
    return none_came_first(ev, engine, main, delivery.signs_against[0], later, main)


#: What fixes a SIGTERM handler of the flow's own that returns.
_HANDLER_FIXES = (
    "do not replace Prefect's SIGTERM handler in a flow; put cleanup in an on_cancellation hook or a "
    "finally block, or make the handler end the run (raise SystemExit, or call the handler "
    "signal.signal returned)",
)


def exception_swallowed(ev: Evidence) -> Verdict | None:
    """Prefect's handler raises `TerminationSignal` in the flow; an `except` of the flow catches it
    without re-raising, and the flow goes on (often to the next item of a loop)."""
    engine = ev.engine
    main = main_thread(engine) if engine else None
    if engine is None or main is None or not engine.swallowing or not main.call.interruptible:
        return None
    handler = engine.sigterm_handler
    if handler is not None and handler.kind is not HandlerKind.PREFECT:
        return None
    clause = engine.swallowing[0]
    place = f"{clause.filename}:{clause.line}"
    catches = "everything (a bare `except:`)" if clause.catches == "except:" else clause.catches
    goes_on = (
        f"and the loop at line {clause.loop_line} goes on to its next item"
        if clause.loop_line
        else "and the flow goes on after it"
    )
    evidence = [
        *ev.notes,
        describe_thread(main),
        f"the main thread's line {clause.frame_line} in {clause.function} is inside a `try` whose "
        f"`{clause.code or 'except'}` ({place}) catches {catches} and does not re-raise: Prefect's "
        f"SIGTERM handler raises TerminationSignal (a BaseException) there, the clause catches it {goes_on}",
    ]
    if handler is not None:
        evidence.append(
            f"the interpreter's SIGTERM handler (read from its memory) is Prefect's: {handler.where()}"
        )
    delivery = ev.delivery
    came = delivery is not None and delivery.sigterm is Delivered.YES
    summary = (
        f"A SIGTERM came, and the `except` at {place} caught Prefect's TerminationSignal {goes_on}; "
        f"it now sits in {main.where()}."
        if came
        else f"A SIGTERM here raises TerminationSignal, which the `except` at {place} catches {goes_on}; "
        f"it sits in {main.where()}."
    )
    swallowed = make_verdict(
        Cause.SIGNAL_IGNORED,
        summary,
        0.9 if came else 0.7,
        evidence,
        main,
    )
    swallowed = dataclasses.replace(
        swallowed,
        remediation=(
            f"at {place}: catch Exception, not {catches} (TerminationSignal is a BaseException so that "
            "flows do not catch it), or re-raise prefect.exceptions.TerminationSignal first",
        ),
        short_fix="catch Exception, not BaseException",
    )
    if came or delivery is None or delivery.sigterm is not Delivered.NO:
        return swallowed
    later = dataclasses.replace(
        swallowed,
        summary=f"Once a SIGTERM comes, the `except` at {place} will catch Prefect's TerminationSignal "
        f"{goes_on}.",
    )
    return none_came_first(ev, engine, main, delivery.signs_against[0], later, main)


def unwinding_held(ev: Evidence) -> Verdict | None:
    """The main thread runs the flow's cleanup (a `finally`, an `except` that catches the signal, a
    `with`'s exit) in a call a signal interrupts, under Prefect's handler (or one not read).

    A SIGTERM that came raised TerminationSignal, and the flow is unwinding through that cleanup,
    which holds it; or none came, and the cleanup runs for another reason. The stack cannot tell
    (CPython keeps the exception in flight in the thread's state): only a sign decides. With none,
    both stay at 0.5, `cancel_not_observed` first (a SIGTERM now would end the process either way).
    """
    engine, delivery = ev.engine, ev.delivery
    main = main_thread(engine) if engine else None
    handler = engine.sigterm_handler if engine else None
    if (
        engine is None
        or main is None
        or not engine.cleanup
        or main.in_shutdown
        or not main.call.interruptible
        or (handler is not None and handler.kind is not HandlerKind.PREFECT)
        or delivery is None
        or delivery.sigterm is Delivered.NO
        or ev.state_type not in (None, StateType.CANCELLING)
    ):
        return None
    clause = engine.cleanup[0]
    runs = (
        f"the main thread's line {clause.frame_line} in {clause.function} runs {clause.where()} "
        f"(`{clause.code or clause.kind}`): code that a SIGTERM's TerminationSignal runs on its way out "
        "of the flow"
    )
    evidence = [*ev.notes, describe_thread(main), runs]
    if handler is not None:
        evidence.append(
            f"the interpreter's SIGTERM handler (read from its memory) is Prefect's: {handler.where()}"
        )
    came = delivery.sigterm is Delivered.YES
    evidence.extend(f"a sign that a SIGTERM came: {sign}" for sign in delivery.signs_for)
    held = make_verdict(
        Cause.SIGNAL_IGNORED,
        f"A SIGTERM came and the flow is unwinding through {clause.where()}, held by {main.where()}."
        if came
        else f"If a SIGTERM came, the flow is unwinding through {clause.where()}, held by {main.where()}.",
        0.9 if came else 0.5,
        evidence,
        main,
    )
    held = dataclasses.replace(
        held,
        remediation=(
            f"bound the cleanup in {clause.where()}: give {main.call.function} a timeout, since a "
            "cancel's unwinding runs it and only another signal interrupts it; or move it to an "
            "on_cancellation hook",
        ),
        short_fix="bound the cleanup with a timeout",
    )
    if came:
        return held
    why = (
        f"{main.call.function} returns to the interpreter when a signal arrives, so a SIGTERM now would "
        f"stop this process; but it runs {clause.where()}, which a SIGTERM that came earlier would be "
        "unwinding through, and no sign says whether one came"
    )
    first = none_came_first(ev, engine, main, why, held, main)
    return dataclasses.replace(
        first,
        summary=f"No sign says whether a SIGTERM reached the flow process {engine.pid}: it runs "
        f"{clause.where()} in {main.where()}, which a SIGTERM's unwinding runs too. If none came, "
        "nothing acted on the cancel; if one came, this call holds the unwinding.",
        confidence=min(first.confidence, 0.5),
    )


def absorbed_unseen(ev: Evidence) -> Verdict | None:
    """A SIGTERM came (a sign says so) to a flow process whose main thread waits in a call a signal
    interrupts, and it lives on: its own code absorbed it, but the handler could not be read here
    (an interpreter this doctor cannot read, a sidecar whose probe could not run)."""
    engine, delivery = ev.engine, ev.delivery
    main = main_thread(engine) if engine else None
    if (
        engine is None
        or main is None
        or delivery is None
        or delivery.sigterm is not Delivered.YES
        or delivery.absorbed_by is not None
        or engine.sigterm_handler is not None
        or not main.call.interruptible
        or ev.state_type not in (None, StateType.CANCELLING)
    ):
        return None
    evidence = [
        *ev.notes,
        describe_thread(main),
        *(f"a sign that a SIGTERM came: {sign}" for sign in delivery.signs_for),
        f"{main.call.function} returns to the interpreter when a signal arrives, and Prefect's handler "
        "would have ended the flow: a handler of the flow's own, or an `except` around the call, "
        "absorbed it",
        *(f"not read here: {what}" for what in delivery.unread),
    ]
    absorbed = make_verdict(
        Cause.SIGNAL_IGNORED,
        f"A SIGTERM came and the flow process {engine.pid} went on; it sits in {main.where()}. What "
        "absorbed it (a SIGTERM handler of the flow's own, or an `except` that catches "
        "BaseException) could not be read here.",
        0.6,
        evidence,
        main,
    )
    return dataclasses.replace(
        absorbed,
        remediation=(
            *_HANDLER_FIXES,
            "an `except BaseException` (or a bare `except:`) around the blocking call catches Prefect's "
            "TerminationSignal: catch Exception instead, or re-raise prefect.exceptions.TerminationSignal",
        ),
        short_fix="end the run on SIGTERM",
    )


def handler_starved(ev: Evidence) -> Verdict | None:
    """A SIGTERM came, but another thread holds the GIL in a C loop: the main thread cannot take
    it to run Prefect's handler (CPython runs Python signal handlers in the main thread only)."""
    engine = ev.engine
    main = main_thread(engine) if engine else None
    if engine is None or main is None or engine.sigterm_pending is not True:
        return None
    holder = gil_holder(engine)
    if holder is None:
        return None
    evidence = [
        *ev.notes,
        describe_thread(holder),
        f"{holder.name or 'the thread'} held the GIL in every sample ({len(engine.dumps)}); the main thread "
        "in none",
        "the interpreter holds a SIGTERM it has not handled (CPython's Handlers[SIGTERM].tripped = 1, read "
        "from the process's memory): the C handler ran, and the Python handler waits for the main thread "
        "to take the GIL",
        describe_thread(main),
    ]
    return make_verdict(
        Cause.SIGNAL_PENDING,
        f"A SIGTERM came, but thread {holder.name} holds the GIL in {holder.where()} (a C call that never "
        "releases it), so the main thread cannot run Prefect's handler.",
        0.9 if holder.stable else 0.7,
        evidence,
        holder,
        extra_fixes=(
            "bound the call that holds the GIL (a regular expression with catastrophic backtracking, a C "
            "extension loop): fix the pattern or input, or run it in a subprocess that can be killed",
        ),
    )


def exit_blocked_by_thread(ev: Evidence) -> Verdict | None:
    """The main thread has unwound (or would) but a non-daemon thread keeps the process alive."""
    engine = ev.engine
    if engine is None:
        return None
    views = thread_views(engine)
    main = views[0] if views and views[0].is_main else None
    others = [
        v
        for v in views
        if not v.is_main and (v.in_user_code or v.runs_pool_work) and not v.call.on_event_loop
    ]
    if not others:
        return None
    holder = next((v for v in others if v.is_pool_worker), others[0])
    evidence = [*ev.notes, describe_thread(holder)]
    if main is None or main.in_shutdown:
        evidence.append(
            "the main thread has left the flow and waits for the thread in "
            + " ← ".join(f.function for f in main.latest.frames[:3])
            if main
            else "the main thread is gone"
        )
        if holder.is_pool_worker:
            evidence.append(f"{holder.name} is a thread-pool (task runner) thread: never a daemon")
        return make_verdict(
            Cause.EXIT_BLOCKED_BY_THREAD,
            f"The flow has unwound but thread {holder.name} still runs {holder.where()}, "
            "and the process waits for it at exit: one more SIGTERM ends it (the main thread takes "
            "it in that wait).",
            0.95,
            evidence,
            holder,
        )
    if not (main.call.interruptible and (holder.is_pool_worker or main.call.kind is CallKind.LOCK)):
        return None
    evidence.append(describe_thread(main))
    evidence.append(
        "a SIGTERM would unwind the main thread, then the interpreter joins this "
        + ("thread-pool thread (never a daemon)" if holder.is_pool_worker else "non-daemon thread")
    )
    blocked = make_verdict(
        Cause.EXIT_BLOCKED_BY_THREAD,
        f"Thread {holder.name} is blocked in {holder.where()}; it keeps the process alive "
        "after the main thread unwinds.",
        0.8 if holder.is_pool_worker else 0.6,
        evidence,
        holder,
    )
    if ev.state_type != StateType.CANCELLING:
        return blocked
    # Cancelling, yet the main thread is still in the flow, in a call a signal interrupts:
    # no SIGTERM came. That is the first cause; the thread only matters once one comes.
    later = dataclasses.replace(
        blocked,
        summary=f"Once a SIGTERM comes, thread {holder.name} ({holder.where()}) will keep the "
        "process alive after the main thread unwinds.",
    )
    why = (
        f"{main.call.function} returns to the interpreter when a signal arrives, so a SIGTERM "
        "would have unwound the main thread"
    )
    return none_came_first(ev, engine, main, why, later, holder)


def event_loop_blocked(ev: Evidence) -> Verdict | None:
    """An async flow's event loop thread is stuck in a synchronous call."""
    engine = ev.engine
    if engine is None:
        return None
    for view in thread_views(engine):
        call = view.call
        if call.on_event_loop and call.user_frame is not None and call.kind is not CallKind.OTHER:
            return make_verdict(
                Cause.EVENT_LOOP_BLOCKED,
                f"The async flow's event loop is blocked in {view.where()}: a synchronous call "
                "on the loop, so no await point is reached.",
                0.9 if view.stable else 0.6,
                [*ev.notes, describe_thread(view), "the frames below it run an asyncio event loop"],
                view,
            )
    return None


def signal_pending(ev: Evidence) -> Verdict | None:
    """The main thread is inside a C call that does not return to the interpreter.

    Only the first cause when a SIGTERM came. CPython's own flag says so where it
    can be read (`ProcessSample.sigterm_pending`): when it says none came, nothing
    acted on the cancel, and this C call is a secondary finding (`also`).
    """
    engine = ev.engine
    main = main_thread(engine) if engine else None
    if engine is None or main is None or main.call.interruptible:
        return None
    evidence = [
        *ev.notes,
        describe_thread(main),
        "Prefect's SIGTERM handler runs in the main thread between bytecodes; "
        "this C call does not return to the interpreter, so the handler stays pending",
    ]
    evidence.extend(socket_facts(ev, engine, main))
    confidence = 0.85 if main.stable else 0.6
    if engine.sigterm_pending is True:
        evidence.append(
            "the interpreter holds a SIGTERM it has not handled (CPython's Handlers[SIGTERM].tripped = 1, "
            "read from the process's memory): a SIGTERM was delivered"
        )
        confidence = 0.95 if main.stable else 0.7
    elif engine.sigterm_pending is None:
        evidence.append(
            "whether a SIGTERM was delivered could not be read from the interpreter "
            "(CPython 3.10/3.11 builds with a symbol table only)"
        )
    delivered, channel = control_channel(engine)
    if channel:
        evidence.append(channel)
    pending = make_verdict(
        Cause.SIGNAL_PENDING,
        f"The main thread is inside a C call ({main.where()}) that does not return to Python, "
        "so the SIGTERM handler cannot run.",
        confidence,
        evidence,
        main,
    )
    not_sent = engine.sigterm_pending is False or (engine.sigterm_pending is None and delivered is False)
    if not not_sent or ev.state_type not in (None, StateType.CANCELLING):
        return pending
    later = dataclasses.replace(
        pending,
        summary=f"Once a SIGTERM comes, this C call ({main.where()}) will still hold it pending.",
    )
    why = (
        "the interpreter holds no SIGTERM (CPython's Handlers[SIGTERM].tripped = 0, read from the "
        "process's memory), and the C call would have kept one pending: none was delivered"
        if engine.sigterm_pending is False
        else f"{channel}: no SIGTERM was sent"
    )
    return none_came_first(ev, engine, main, why, later, main)
