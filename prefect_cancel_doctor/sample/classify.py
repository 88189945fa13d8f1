"""What one thread is blocked in: the user-code frame, the call it makes, its kind.

py-spy without `--native` shows the Python line that made a C call, not the
call itself; so the callee is read, in order of trust, from the library frames
above the user frame, the native frames, the source line, and the kernel's
syscall and wait channel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from prefect_cancel_doctor.model import CallKind, Frame, KernelThread, ThreadSample
from prefect_cancel_doctor.proc.resources import DATABASE_PORTS

_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages/|dist-packages/)")
_THIRD_PARTY = re.compile(r"/(site|dist)-packages/")

#: Module prefixes of library frames (stdlib or site-packages) → kind.
_MODULE_KINDS: tuple[tuple[str, CallKind], ...] = (
    ("sqlite3", CallKind.DATABASE),
    ("psycopg", CallKind.DATABASE),
    ("psycopg2", CallKind.DATABASE),
    ("pymysql", CallKind.DATABASE),
    ("MySQLdb", CallKind.DATABASE),
    ("sqlalchemy", CallKind.DATABASE),
    ("asyncpg", CallKind.DATABASE),
    ("redis", CallKind.DATABASE),
    ("pymongo", CallKind.DATABASE),
    ("subprocess", CallKind.SUBPROCESS),
    ("multiprocessing", CallKind.SUBPROCESS),
    ("asyncio.subprocess", CallKind.SUBPROCESS),
    ("socket", CallKind.NETWORK_IO),
    ("ssl", CallKind.NETWORK_IO),
    ("http", CallKind.NETWORK_IO),
    ("urllib", CallKind.NETWORK_IO),
    ("urllib3", CallKind.NETWORK_IO),
    ("requests", CallKind.NETWORK_IO),
    ("httpx", CallKind.NETWORK_IO),
    ("httpcore", CallKind.NETWORK_IO),
    ("aiohttp", CallKind.NETWORK_IO),
    ("smtplib", CallKind.NETWORK_IO),
    ("ftplib", CallKind.NETWORK_IO),
    ("paramiko", CallKind.NETWORK_IO),
    ("boto3", CallKind.NETWORK_IO),
    ("botocore", CallKind.NETWORK_IO),
    ("queue", CallKind.LOCK),
    ("threading", CallKind.LOCK),
    ("concurrent.futures", CallKind.LOCK),
    ("asyncio.locks", CallKind.LOCK),
    ("hashlib", CallKind.CPU),
)

#: Callee names as written in the source line (last dotted part) → (qualified name, kind).
_CALL_NAMES: dict[str, tuple[str, CallKind]] = {
    "sleep": ("time.sleep", CallKind.SLEEP),
    "recv": ("socket.recv", CallKind.NETWORK_IO),
    "recv_into": ("socket.recv_into", CallKind.NETWORK_IO),
    "recvfrom": ("socket.recvfrom", CallKind.NETWORK_IO),
    "accept": ("socket.accept", CallKind.NETWORK_IO),
    "connect": ("socket.connect", CallKind.NETWORK_IO),
    "sendall": ("socket.sendall", CallKind.NETWORK_IO),
    "create_connection": ("socket.create_connection", CallKind.NETWORK_IO),
    "urlopen": ("urllib.request.urlopen", CallKind.NETWORK_IO),
    "execute": ("Cursor.execute", CallKind.DATABASE),
    "executemany": ("Cursor.executemany", CallKind.DATABASE),
    "executescript": ("Cursor.executescript", CallKind.DATABASE),
    "commit": ("Connection.commit", CallKind.DATABASE),
    "fetchall": ("Cursor.fetchall", CallKind.DATABASE),
    "fetchone": ("Cursor.fetchone", CallKind.DATABASE),
    "waitpid": ("os.waitpid", CallKind.SUBPROCESS),
    "acquire": ("threading.Lock.acquire", CallKind.LOCK),
    "pbkdf2_hmac": ("hashlib.pbkdf2_hmac", CallKind.CPU),
    "scrypt": ("hashlib.scrypt", CallKind.CPU),
    "read": ("read", CallKind.FILE_IO),
    "write": ("write", CallKind.FILE_IO),
    "fsync": ("os.fsync", CallKind.FILE_IO),
}

#: Native symbol prefixes (from `py-spy dump --native`) → (qualified name, kind).
_NATIVE: tuple[tuple[str, str, CallKind], ...] = (
    ("sqlite3", "sqlite3.Cursor.execute", CallKind.DATABASE),
    ("pysqlite", "sqlite3.Cursor.execute", CallKind.DATABASE),
    ("PQ", "libpq", CallKind.DATABASE),
    ("pq", "libpq", CallKind.DATABASE),
    ("mysql_", "libmysqlclient", CallKind.DATABASE),
    ("pbkdf2", "hashlib.pbkdf2_hmac", CallKind.CPU),
    ("PKCS5_PBKDF2", "hashlib.pbkdf2_hmac", CallKind.CPU),
    ("time_sleep", "time.sleep", CallKind.SLEEP),
    ("sock_recv", "socket.recv", CallKind.NETWORK_IO),
    ("sock_accept", "socket.accept", CallKind.NETWORK_IO),
    ("sock_connect", "socket.connect", CallKind.NETWORK_IO),
    ("os_waitpid", "os.waitpid", CallKind.SUBPROCESS),
    ("lock_PyThread_acquire_lock", "threading.Lock.acquire", CallKind.LOCK),
    ("rlock_acquire", "threading.RLock.acquire", CallKind.LOCK),
)

#: Kernel syscall name → kind, the weakest signal.
_SYSCALL_KINDS: dict[str, CallKind] = {
    "clock_nanosleep": CallKind.SLEEP,
    "nanosleep": CallKind.SLEEP,
    "futex": CallKind.LOCK,
    "recvfrom": CallKind.NETWORK_IO,
    "recvmsg": CallKind.NETWORK_IO,
    "accept": CallKind.NETWORK_IO,
    "accept4": CallKind.NETWORK_IO,
    "connect": CallKind.NETWORK_IO,
    "sendto": CallKind.NETWORK_IO,
    "wait4": CallKind.SUBPROCESS,
    "waitid": CallKind.SUBPROCESS,
    "fsync": CallKind.FILE_IO,
}

#: Calls whose wait the Python signal machinery interrupts (EINTR → handler runs).
INTERRUPTIBLE_KINDS = frozenset(
    {CallKind.SLEEP, CallKind.NETWORK_IO, CallKind.SUBPROCESS, CallKind.LOCK, CallKind.FILE_IO}
)


def is_library(filename: str) -> bool:
    """True for the standard library, site-packages and frozen modules.

    `<string>` and `<stdin>` (code run with `python -c` or piped in) are user code;
    console-script shims (`.../bin/prefect`) are not.
    """
    return (
        filename.startswith("<frozen")
        or bool(_STDLIB.search(filename))
        or bool(_THIRD_PARTY.search(filename))
        or _is_console_script(filename)
    )


def _is_console_script(filename: str) -> bool:
    """An installed entry-point shim such as .../venv/bin/prefect."""
    return "/bin/" in filename and not filename.endswith(".py")


def module_of(filename: str) -> str:
    """Dotted module name from a library path (".../site-packages/requests/api.py" → "requests.api")."""
    match = _THIRD_PARTY.search(filename) or _STDLIB.search(filename)
    tail = filename[match.end() :] if match else filename.rsplit("/", 1)[-1]
    tail = re.sub(r"(/__init__)?\.py$", "", tail)
    return tail.replace("/", ".")


def db_port_name(port: int) -> str | None:
    """The database usually behind a TCP port, if any."""
    return DATABASE_PORTS.get(port)


@dataclass(frozen=True)
class ThreadCall:
    """The call one thread makes in one sample."""

    user_frame: Frame | None
    #: Library frames between the user frame and the top, outermost first.
    library_frames: tuple[Frame, ...]
    function: str
    kind: CallKind
    native: str | None
    on_event_loop: bool
    #: True when a signal makes the call return to the interpreter (so Python's
    #: SIGTERM handler runs); False for C code that loops or computes regardless.
    interruptible: bool

    @property
    def site(self) -> tuple[str | None, int | None, str]:
        """What must stay the same across samples for the call to count as blocking: the user
        frame's line (the callee's name may be read from native frames in one sample only)."""
        if self.user_frame is None:
            top = self.library_frames[-1] if self.library_frames else None
            return (top.filename, top.line, "") if top else (None, None, self.function)
        return self.user_frame.filename, self.user_frame.line, ""


def innermost_user_frame(frames: Sequence[Frame]) -> tuple[Frame | None, tuple[Frame, ...]]:
    """The innermost frame in user code and the library frames called from it (outermost first)."""
    for index, frame in enumerate(frames):  # py-spy lists innermost first
        if not frame.native and not is_library(frame.filename):
            above = tuple(f for f in reversed(frames[:index]) if not f.native)
            return frame, above
    return None, ()


def runs_event_loop(frames: Sequence[Frame]) -> bool:
    """True when the thread runs an asyncio event loop beneath the current frame."""
    return any(f.function.endswith(("_run_once", "run_forever")) and "asyncio" in f.filename for f in frames)


def classify_thread(thread: ThreadSample) -> ThreadCall:
    """Name the call a thread is in and its kind."""
    user, library = innermost_user_frame(thread.frames)
    kernel = thread.kernel
    native_top = thread.native_frames[0] if thread.native_frames else None
    function, kind = _from_library(library)
    if kind is None:
        function, kind = _from_native(thread.native_frames)
    if kind is None and user is not None and user.code:
        function, kind = _from_source(user.code, kernel)
    if kind is None:
        function, kind = _from_kernel(kernel)
    if kind is CallKind.FILE_IO and kernel is not None and kernel.syscall_name in _SYSCALL_KINDS:
        kind = _SYSCALL_KINDS[kernel.syscall_name]  # "read" on a socket or pipe is not file I/O
    if kernel is not None and kernel.state == "R" and kind in (None, CallKind.OTHER):
        kind = CallKind.CPU
    kind = kind or CallKind.OTHER
    return ThreadCall(
        user_frame=user,
        library_frames=library,
        function=function or (thread.frames[0].function if thread.frames else "?"),
        kind=kind,
        native=native_top,
        on_event_loop=runs_event_loop(thread.frames),
        interruptible=_interruptible(kind, function, thread, kernel),
    )


def unexplained(thread: ThreadSample) -> bool:
    """Whether only native frames can say what a thread running user code is in: C code running
    (CPU), a call that stays in C through a signal (a C database driver: native frames name the
    library), or a call of no known kind not asleep in a syscall the kernel names (an idle event
    loop in epoll_wait is explained). A thread with no user frame (Prefect's own workers and
    loops) holds no call of the flow's."""
    if innermost_user_frame(thread.frames)[0] is None:
        return False
    call, kernel = classify_thread(thread), thread.kernel
    if call.kind is CallKind.CPU or not call.interruptible:
        return True
    return call.kind is CallKind.OTHER and (
        kernel is None or kernel.state == "R" or kernel.syscall_name is None
    )


def _interruptible(
    kind: CallKind, function: str | None, thread: ThreadSample, kernel: KernelThread | None
) -> bool:
    frames = thread.frames
    if kind in INTERRUPTIBLE_KINDS:
        return True
    if kind is CallKind.CPU:
        # Native frames above the Python ones, a known C routine, or a busy thread that
        # released the GIL all mean C code; a GIL-holding loop with none is bytecode,
        # which runs the handler between instructions.
        in_c = bool(thread.native_frames) or (function or "").startswith("hashlib.")
        return not in_c and thread.owns_gil
    if kind is CallKind.DATABASE:
        # A pure-Python driver waits in socket/ssl/selectors, which return on EINTR;
        # C drivers (sqlite3, libpq, mysqlclient) retry inside C and never return.
        top = next((f for f in frames if not f.native), None)
        return top is not None and module_of(top.filename).startswith(("socket", "ssl", "selectors"))
    if kind is CallKind.OTHER:
        return kernel is None or kernel.state != "R"
    return False


def _from_library(library: tuple[Frame, ...]) -> tuple[str | None, CallKind | None]:
    if not library:
        return None, None
    entry = library[0]  # the library function the user code called
    entry_module = module_of(entry.filename)
    function = f"{entry_module}.{entry.function}"
    for frame in (entry, *reversed(library)):
        module = module_of(frame.filename)
        for prefix, kind in _MODULE_KINDS:
            if module == prefix or module.startswith(prefix + "."):
                if kind is CallKind.LOCK and entry_module.startswith("subprocess"):
                    return function, CallKind.SUBPROCESS
                if kind is CallKind.NETWORK_IO and _looks_like_sleep(library):
                    return function, CallKind.SLEEP
                return function, kind
    return function, None


def _looks_like_sleep(library: tuple[Frame, ...]) -> bool:
    return any(f.function.endswith("sleep") for f in library)


def _from_native(native_frames: Sequence[str]) -> tuple[str | None, CallKind | None]:
    for symbol in native_frames:
        for prefix, function, kind in _NATIVE:
            if symbol.startswith(prefix):
                return function, kind
    return None, None


_CALL = re.compile(r"([A-Za-z_][\w.]*)\s*\(")


def _from_source(code: str, kernel: KernelThread | None) -> tuple[str | None, CallKind | None]:
    calls = _CALL.findall(code.split("#", 1)[0])
    for call in reversed(calls):  # the innermost call is usually the last one opened
        name = call.rsplit(".", 1)[-1]
        if name in _CALL_NAMES:
            qualified, kind = _CALL_NAMES[name]
            if name in ("read", "write") and kernel and kernel.syscall_name in _SYSCALL_KINDS:
                kind = _SYSCALL_KINDS[kernel.syscall_name]
            return qualified, kind
    return (calls[-1] if calls else None), None


def _from_kernel(kernel: KernelThread | None) -> tuple[str | None, CallKind | None]:
    if kernel is None or kernel.syscall_name is None:
        return None, None
    return kernel.syscall_name, _SYSCALL_KINDS.get(kernel.syscall_name)
