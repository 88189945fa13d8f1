"""Threads followed across samples: what each is doing and whether it moves."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from prefect_cancel_doctor.model import (
    BlockingCall,
    CallKind,
    KernelThread,
    ProcessSample,
    Resource,
    ResourceKind,
    ThreadSample,
)
from prefect_cancel_doctor.proc.resources import DATABASE_PORTS
from prefect_cancel_doctor.sample.classify import ThreadCall, classify_thread

#: The kind of a call whose Python frames do not tell, from what the kernel says it waits on.
_KIND_OF_RESOURCE = {
    ResourceKind.FIFO: CallKind.FILE_IO,
    ResourceKind.PIPE: CallKind.FILE_IO,
    ResourceKind.FILE: CallKind.FILE_IO,
    ResourceKind.SOCKET: CallKind.NETWORK_IO,
    ResourceKind.UNIX_SOCKET: CallKind.NETWORK_IO,
    ResourceKind.CHILD: CallKind.SUBPROCESS,
}

#: Functions in which a main thread sits after the flow returned or unwound.
_SHUTDOWN_FUNCTIONS = ("_shutdown", "Thread._shutdown", "ThreadPoolExecutor.shutdown")
#: The same in asyncio (3.11+): `asyncio.run` closing its loop, which waits for the default
#: executor's threads (`asyncio.to_thread`) after the flow's coroutine returned or unwound.
_ASYNCIO_SHUTDOWN = ("Runner.close", "asyncio/runners.py")


@dataclass(frozen=True)
class ThreadView:
    """One thread of one process across all samples."""

    pid: int
    name: str | None
    native_id: int | None
    is_main: bool
    calls: tuple[ThreadCall, ...]
    kernel: KernelThread | None
    #: The newest py-spy sample of this thread.
    latest: ThreadSample

    @property
    def call(self) -> ThreadCall:
        """The most frequent call across samples; among those, one with native frames if any
        (the sampler takes native stacks on the first dump only), else the latest."""
        counts = Counter(c.site for c in self.calls)
        best = max(counts.values())
        candidates = [c for c in reversed(self.calls) if counts[c.site] == best]
        return next((c for c in candidates if c.native is not None), candidates[0])

    @property
    def stable(self) -> bool:
        """True when every sample shows the same call at the same line."""
        return len({c.site for c in self.calls}) == 1

    @property
    def in_user_code(self) -> bool:
        """True when some frame of the thread is the user's code."""
        return self.call.user_frame is not None

    @property
    def in_shutdown(self) -> bool:
        """True for a main thread that has left the flow and waits in interpreter shutdown."""
        frames = self.latest.frames
        return (
            self.is_main
            and any(
                f.function.endswith(_SHUTDOWN_FUNCTIONS)
                or (f.function == _ASYNCIO_SHUTDOWN[0] and f.filename.endswith(_ASYNCIO_SHUTDOWN[1]))
                for f in frames
            )
            and (self.call.user_frame is None)
        )

    @property
    def is_pool_worker(self) -> bool:
        """True for a concurrent.futures worker thread: joined at exit, never a daemon."""
        return any(
            f.function.endswith("_worker") and f.filename.endswith("concurrent/futures/thread.py")
            for f in self.latest.frames
        )

    @property
    def runs_pool_work(self) -> bool:
        """True for a thread-pool thread running a submitted call (not idle on its queue):
        a task of the ThreadPoolTaskRunner, or what `asyncio.to_thread` hands it."""
        return self.is_pool_worker and any(f.function.endswith("_WorkItem.run") for f in self.latest.frames)

    @property
    def resource(self) -> Resource | None:
        """What the thread's blocked syscall waits on, as the kernel showed it last."""
        return self.kernel.resource if self.kernel else None

    @property
    def kind(self) -> CallKind:
        """The call's kind; where the Python frames leave it open, the resource decides."""
        kind, resource = self.call.kind, self.resource
        if kind is CallKind.OTHER and resource is not None:
            return _KIND_OF_RESOURCE.get(resource.kind, kind)
        if (
            kind is CallKind.NETWORK_IO
            and resource is not None
            and resource.service in DATABASE_PORTS.values()
        ):
            return CallKind.DATABASE
        return kind

    def blocking_call(self) -> BlockingCall:
        """The verdict's `blocking_call` for this thread."""
        call = self.call
        frame = call.user_frame
        return BlockingCall(
            kind=self.kind,
            function=call.function,
            filename=frame.filename if frame else None,
            line=frame.line if frame else None,
            code=frame.code if frame else None,
            thread_name=self.name,
            native=call.native,
            on_event_loop=call.on_event_loop,
            stable=self.stable,
            pid=self.pid,
            thread_id=self.latest.thread_id,
            resource=self.resource,
        )

    def where(self) -> str:
        """`function at file:line` (and what it waits on) for summaries."""
        call = self.call
        place = call.function
        if call.user_frame is not None:
            place += f" at {call.user_frame.filename}:{call.user_frame.line}"
        return f"{place}, {self.resource.description}" if self.resource else place


def thread_views(process: ProcessSample) -> list[ThreadView]:
    """Group a process's samples by thread; main thread first."""
    by_thread: dict[int, list[ThreadSample]] = {}
    for dump in process.dumps:
        for thread in dump:
            by_thread.setdefault(thread.thread_id, []).append(thread)
    ns_pid = process.proc.ns_pid if process.proc else None
    views = []
    for samples in by_thread.values():
        latest = samples[-1]
        is_main = latest.native_id in (process.pid, ns_pid) or latest.name == "MainThread"
        views.append(
            ThreadView(
                pid=process.pid,
                name=latest.name,
                native_id=latest.native_id,
                is_main=is_main,
                calls=tuple(classify_thread(s) for s in samples),
                kernel=latest.kernel,
                latest=latest,
            )
        )
    return sorted(views, key=lambda v: not v.is_main)
