"""What was read about one process: /proc's view, py-spy's threads, its SIGTERM handler."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_cancel_doctor.model.vocabulary import HandlerKind, ResourceKind, Role, SampleFailure


@dataclass(frozen=True)
class SigtermHandler:
    """The Python-level SIGTERM handler of an interpreter, as read from its memory."""

    kind: HandlerKind
    #: The callable's qualified name (`_prefect_sigterm_handler`, `main.<locals>.<lambda>`).
    qualname: str | None = None
    #: Where it is defined: its code object's file and first line.
    filename: str | None = None
    line: int | None = None

    def where(self) -> str:
        """`qualname at file:line`, as far as known."""
        place = f"{self.filename}:{self.line}" if self.filename and self.line else self.filename or ""
        name = self.qualname or str(self.kind)
        return f"{name} at {place}" if place else name


@dataclass(frozen=True)
class SwallowingExcept:
    """An `except` in the flow's code, around a line of its main thread, that catches a termination
    signal (`BaseException`, a bare `except:`, `TerminationSignal`, `ExternalSignal`) and does not
    re-raise it: Prefect's SIGTERM handler raises there, and the flow goes on."""

    filename: str
    #: The `except` clause's line, and its text.
    line: int
    code: str | None
    #: What it catches, as written (`BaseException`, `except:`, `TerminationSignal`).
    catches: str
    #: The function whose frame is inside the `try`, and that frame's line.
    function: str
    frame_line: int
    #: The line of a `for`/`while` around the `try` in the same function: the flow goes on to the
    #: next item (None: no loop; the flow goes on after the `try`).
    loop_line: int | None = None


@dataclass(frozen=True)
class CleanupClause:
    """Code of the flow's that its main thread runs now and that a termination signal on its way
    out would run too: a `finally` body, the body of an `except` that catches the signal, or a
    `with`'s exit. From the stack alone, whether a SIGTERM came and the flow is unwinding through
    it cannot be told: CPython keeps the exception in flight in the thread's state, not the stack."""

    filename: str
    #: The clause's line (`finally:`, the `except`, the `with`), and its text.
    line: int
    code: str | None
    #: "finally", "except" or "with".
    kind: str
    #: The function whose frame runs it, and that frame's line.
    function: str
    frame_line: int

    def where(self) -> str:
        return f"the `{self.kind}` at {self.filename}:{self.line}"


@dataclass(frozen=True)
class Frame:
    """One stack frame as py-spy reports it."""

    function: str
    filename: str
    line: int
    module: str | None = None
    #: The source line, read from the target's filesystem when available.
    code: str | None = None
    #: True for a native (C) frame from `py-spy dump --native`.
    native: bool = False
    #: Local variables (only with --locals; secret-looking names redacted).
    locals: dict[str, str] | None = None


@dataclass(frozen=True)
class SocketPeer:
    """A TCP connection a process holds, with its remote end."""

    fd: int
    local: str
    remote: str
    state: str


@dataclass(frozen=True)
class Resource:
    """The resource behind a blocked call: "opening FIFO /data/in.fifo, which no process has
    open for writing", "reading a pipe whose writer is PID 812 (sleep 3600)"."""

    kind: ResourceKind
    #: One phrase for people, naming the resource and what is on its other end.
    description: str
    fd: int | None = None
    path: str | None = None
    #: The remote end of a TCP connection ("10.0.3.7:5432") and its usual service.
    peer: str | None = None
    service: str | None = None
    #: The processes on the other end (a pipe's or FIFO's writers, a waited-for child).
    peer_pids: tuple[int, ...] = ()
    #: The filesystem type of a file's mount (nfs4, fuse.sshfs, ext4, ...).
    mount_type: str | None = None


@dataclass(frozen=True)
class KernelThread:
    """What /proc says about one thread (task) of a process."""

    tid: int
    name: str
    state: str
    wchan: str | None
    syscall: int | None
    syscall_name: str | None
    sig_blocked: int = 0
    sig_pending: int = 0
    #: The blocked syscall's first arguments (/proc/PID/task/TID/syscall), when in one.
    syscall_args: tuple[int, ...] = ()
    #: What that syscall waits on, where it could be told (filled in after sampling).
    resource: Resource | None = None


@dataclass(frozen=True)
class ProcSnapshot:
    """What /proc says about one process at one moment."""

    pid: int
    ppid: int
    cmdline: tuple[str, ...]
    comm: str
    state: str
    #: PID as seen in the innermost PID namespace (1 means PID 1 of a container).
    ns_pid: int
    sig_ignored: int
    sig_caught: int
    sig_blocked: int
    sig_pending: int
    shared_pending: int
    threads: tuple[KernelThread, ...]
    sockets: tuple[SocketPeer, ...]
    children: tuple[int, ...]
    flow_run_id: str | None
    start_time_ticks: int
    #: False when /proc/PID/environ could not be read (another user's process, no ptrace
    #: rights): then `flow_run_id` is unknown, not absent.
    environ_readable: bool = True
    #: PREFECT__CONTROL_PORT from its environment: the Runner's control channel (Prefect 3.9+),
    #: over which the cancel intent comes just before SIGTERM.
    control_port: int | None = None
    #: Its process group: a Runner's group SIGTERM (Prefect 3.9 default launches) reaches
    #: the children that stayed in the flow's group, not those that left it.
    pgid: int | None = None


@dataclass(frozen=True)
class ThreadSample:
    """One thread of one py-spy dump, merged with the kernel's view of it."""

    thread_id: int
    native_id: int | None
    name: str | None
    active: bool
    owns_gil: bool
    frames: tuple[Frame, ...]
    native_frames: tuple[str, ...] = ()
    kernel: KernelThread | None = None


@dataclass(frozen=True)
class ProcessSample:
    """Repeated samples of one process: the kernel view and py-spy's threads."""

    pid: int
    role: Role
    proc: ProcSnapshot | None
    #: One entry per successful py-spy dump, each a tuple of threads.
    dumps: tuple[tuple[ThreadSample, ...], ...]
    native: bool
    errors: tuple[str, ...] = ()
    python: bool = True
    #: Why no stack could be taken at all (None when some dump succeeded or none was tried).
    failure: SampleFailure | None = None
    #: Whether the interpreter holds a SIGTERM it has not handled yet (CPython's own flag,
    #: read from the process's memory); None where it cannot be read (see proc/interpreter.py).
    sigterm_pending: bool | None = None
    #: The interpreter's SIGTERM handler (None where it cannot be read, see sample/handler.py).
    sigterm_handler: SigtermHandler | None = None
    #: `except` clauses in the flow's code that would catch Prefect's `TerminationSignal` around
    #: the main thread's current line and not re-raise it (sample/excepts.py).
    swallowing: tuple[SwallowingExcept, ...] = ()
    #: The cleanup code (`finally`, an `except` catching the signal, a `with`'s exit) the main
    #: thread runs now, innermost first (sample/excepts.py).
    cleanup: tuple[CleanupClause, ...] = ()
