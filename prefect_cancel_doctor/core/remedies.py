"""The concrete fixes to propose, by cause and by the kind of blocking call."""

from __future__ import annotations

import json
import re

from prefect_cancel_doctor.core.links import is_uuid
from prefect_cancel_doctor.model import BlockingCall, CallKind, Cause

#: The first fix of a verdict the doctor can act on: its own safe command (`resolve_line`).
RESOLVE_NOW = "end it now, safely: "
#: The next: the same by hand, for where the doctor cannot run (`stop_line`).
STOP_NOW = "or by hand, in order: "

#: What lets a worker's cancel reach a flow's children: it signals the flow's process group.
GROUP_SIGNAL_FIX = (
    "start children in the flow's process group (no start_new_session/setsid) so the "
    "cancel's process-group SIGTERM reaches them"
)

#: The lasting fix where no Runner ran beside the flow (`cancel_not_observed`): nothing could act.
RUN_A_RUNNER_FIX = (
    "run the flow under a Prefect Runner, which is what acts on a cancel: a job's command "
    "`prefect flow-run execute` (a worker's default), or `flow.serve()`; not `python -m prefect.engine` "
    "or the flow script"
)

_PLAIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

_BY_CAUSE: dict[Cause, tuple[str, ...]] = {
    Cause.CANCEL_NOT_OBSERVED: (
        "a restarted or new worker will not finish this cancel (since Prefect 3.6.9 a worker cancels "
        "only the runs it is submitting itself; a started run's own Runner does the rest): end it as "
        "above; if the owning worker is alive, its log says 'Cancellation observer failed' — restart "
        "it for the runs to come",
        "set PREFECT_RUNNER_CRASH_ON_CANCELLATION_FAILURE=true on workers so lost cancellation "
        "observers crash runs instead of leaving them running",
    ),
    Cause.SIGNAL_IGNORED: (
        "do not set SIGTERM to SIG_IGN or block it; a custom handler must end the run "
        "(raise or call sys.exit) or chain to the previous handler",
    ),
    Cause.SIGNAL_PENDING: (
        "bound the C call: give it a timeout or split it into chunks that return to Python",
        "run it in a subprocess Prefect can kill, e.g. "
        "prefect.utilities.processutils.run_process, or give the task @task(timeout_seconds=...)",
    ),
    Cause.EXIT_BLOCKED_BY_THREAD: (
        "start background threads with daemon=True, or stop them from an Event set in a "
        "finally/on_cancellation hook",
        "give thread-pool tasks @task(timeout_seconds=...) and make their waits interruptible",
    ),
    Cause.EVENT_LOOP_BLOCKED: (
        "never call blocking code on the event loop: use `await anyio.sleep(...)` / "
        "`await asyncio.sleep(...)` and async clients",
        "move unavoidable blocking calls off the loop: `await anyio.to_thread.run_sync(fn)`",
    ),
    Cause.PID1_NO_FORWARD: (
        "use `exec` in the entrypoint so Python becomes PID 1, or run with an init "
        "(tini -g, `docker run --init`)",
    ),
    Cause.UNINTERRUPTIBLE_IO: (
        "find the stuck mount or device (NFS, FUSE, a dead disk): the process ends only when "
        "the I/O returns; use soft/timeo mount options for network filesystems",
    ),
    Cause.CHILD_PROCESS_SURVIVES: (
        GROUP_SIGNAL_FIX,
        "terminate child processes in a finally block or an on_cancellation hook; prefer "
        "prefect.utilities.processutils.run_process, which ends its child when cancelled",
    ),
    Cause.CANCELLATION_HOOK_HANG: (
        "bound on_cancellation hooks with timeouts; they run before Cancelled is proposed",
    ),
    Cause.NEVER_STARTED: (
        "no other worker will finish it (since Prefect 3.6.9 a worker cancels only the runs it is "
        "submitting itself): mark it Cancelled as above, or wait for the server's cancellation "
        "cleanup (Prefect 3.7.5+: PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_CANCELLING_TIMEOUT_SECONDS)",
    ),
    Cause.INFRASTRUCTURE_GONE: (
        "nothing is left to stop; marking it Cancelled (as above) releases its concurrency slot; "
        "or wait for the server's cancellation cleanup (Prefect 3.7.5+: "
        "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_CANCELLING_TIMEOUT_SECONDS)",
        "find out why it died: OOM kill (dmesg), node restart, or a killed worker",
    ),
    Cause.ORPHANED_INFRASTRUCTURE: (
        "the run looks finished but still holds CPU, memory and connections and may still be doing "
        "its work: stop it as above; the blocking call and evidence here say what held it past its "
        "cancel, so that the next cancel ends it",
    ),
    Cause.NOT_ATTACHABLE: (
        "run the doctor on the host that runs the process, with the right to read it (CAP_SYS_PTRACE: "
        "root, unless a container dropped it)",
    ),
    Cause.UNKNOWN: (),
}

_BY_KIND: dict[CallKind, str] = {
    # On the event loop, the cause's own fixes (`await anyio.sleep`) say it.
    CallKind.SLEEP: "sleep in short steps, or wait on an Event that a cancellation hook can set",
    CallKind.NETWORK_IO: "set a timeout on the client (socket.settimeout, "
    "httpx.Client(timeout=...), requests.get(..., timeout=...))",
    CallKind.DATABASE: "set a timeout on the database call (sqlite3.connect(timeout=...), "
    "PostgreSQL statement_timeout / connect_timeout, the driver's read timeout)",
    CallKind.SUBPROCESS: "run commands with prefect.utilities.processutils.run_process or "
    "anyio.run_process (they end the child on cancel), or pass timeout= to subprocess.run",
    CallKind.LOCK: "wait with a timeout (lock.acquire(timeout=...), queue.get(timeout=...)) "
    "in a loop that checks for shutdown",
    CallKind.CPU: "add @task(timeout_seconds=...) and run long C computations in a subprocess",
    CallKind.FILE_IO: "check the filesystem the file lives on (network mounts, FUSE)",
}


#: Causes where the blocking call itself is what must change.
_CALL_IS_THE_PROBLEM = (
    Cause.SIGNAL_PENDING,
    Cause.EXIT_BLOCKED_BY_THREAD,
    Cause.EVENT_LOOP_BLOCKED,
    Cause.CANCELLATION_HOOK_HANG,
)

_SHORT_BY_CAUSE: dict[Cause, str] = {
    Cause.CANCEL_NOT_OBSERVED: "kill the flow, mark it Cancelled",
    Cause.SIGNAL_IGNORED: "stop ignoring SIGTERM",
    Cause.EXIT_BLOCKED_BY_THREAD: "daemon=True / stop the thread",
    Cause.EVENT_LOOP_BLOCKED: "await anyio.sleep / to_thread",
    Cause.PID1_NO_FORWARD: "exec in entrypoint / tini",
    Cause.UNINTERRUPTIBLE_IO: "fix the stuck mount or device",
    Cause.CHILD_PROCESS_SURVIVES: "kill the children; use run_process",
    Cause.CANCELLATION_HOOK_HANG: "timeout in on_cancellation",
    Cause.NEVER_STARTED: "mark it Cancelled",
    Cause.INFRASTRUCTURE_GONE: "mark it Cancelled",
    Cause.ORPHANED_INFRASTRUCTURE: "stop it (kill, docker rm -f)",
    Cause.NOT_ATTACHABLE: "run the doctor on its host",
    Cause.UNKNOWN: "read the stacks",
}

_SHORT_BY_KIND: dict[CallKind, str] = {
    CallKind.DATABASE: "timeout on the DB call",
    CallKind.NETWORK_IO: "timeout on the client",
    CallKind.CPU: "run it in a killable subprocess",
    CallKind.SUBPROCESS: "run_process / timeout=",
    CallKind.LOCK: "wait with a timeout",
}


def remediation(cause: Cause, call: BlockingCall | None) -> tuple[str, ...]:
    """Fixes for a verdict: the cause's own, then the blocking call's."""
    fixes = list(_BY_CAUSE[cause])
    if call is not None and call.kind in _BY_KIND and cause in _CALL_IS_THE_PROBLEM:
        fixes.append(_BY_KIND[call.kind])
    return tuple(fixes)


def short_fix(cause: Cause, call: BlockingCall | None) -> str:
    """A few words for the summary table."""
    if cause is Cause.SIGNAL_PENDING and call is not None:
        return _SHORT_BY_KIND.get(call.kind, "bound the C call")
    return _SHORT_BY_CAUSE[cause]


def stop_line(commands: tuple[str, ...]) -> str:
    """The by-hand fix of a verdict with `stop_now` commands: them, in order, as one line."""
    return STOP_NOW + ", then ".join(f"`{command}`" for command in commands)


#: How the by-hand command that sets a run's state starts (`mark_cancelled_command`).
_MARK_CANCELLED = "prefect api POST /flow_runs/"


def mark_cancelled_command(run_id: str, what: str) -> str | None:
    """A one-line command forcing the run to Cancelled through Prefect's own CLI (`prefect api`, with
    the same profile, PREFECT_API_URL and PREFECT_API_KEY as every `prefect` command); None for an id
    that is not a UUID (never put in a shell line). `what` (what was stopped) is said in the state's
    message unless it holds a quote that would end the shell word."""
    if not is_uuid(run_id):
        return None
    message = "Cancelled by hand after prefect-cancel-doctor" + (f": {what}" if "'" not in what else "")
    body = json.dumps(
        {"state": {"type": "CANCELLED", "message": message}, "force": True}, separators=(",", ":")
    )
    return f"{_MARK_CANCELLED}{run_id}/set_state --data '{body}'"


def marks_cancelled(command: str) -> bool:
    """Whether a by-hand command is `mark_cancelled_command`'s."""
    return command.startswith(_MARK_CANCELLED)


def resolve_line(run_id: str, run_name: str) -> str:
    """The first fix of a verdict the doctor can act on: `resolve` for the run, by its name where
    the name is one plain shell word (names need not be unique; `resolve` asks which), else its id."""
    target = run_name if _PLAIN_WORD.fullmatch(run_name) else run_id
    return f"{RESOLVE_NOW}`prefect-cancel-doctor resolve {target}`"
