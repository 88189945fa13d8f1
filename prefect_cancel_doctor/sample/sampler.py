"""Sample a process several times: /proc first, then py-spy, merged per thread."""

from __future__ import annotations

import dataclasses
import heapq
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from prefect_cancel_doctor.model import Frame, ProcessSample, ProcSnapshot, Role, ThreadSample
from prefect_cancel_doctor.proc.procfs import (
    PathLike,
    read_process,
    read_source_line,
    still_same,
    thread_ns_tids,
)
from prefect_cancel_doctor.sample.classify import unexplained
from prefect_cancel_doctor.sample.pyspy import (
    NativeUnavailable,
    NotPython,
    PermissionDenied,
    ProcessGone,
    PySpyNotFound,
    SamplerError,
    SampleTimeout,
    dump,
)

EXITED = "process exited during sampling"
#: How often, and how far apart, a dump refused because another tracer held the process is retried.
_BUSY_RETRIES = 3
_BUSY_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class SampleRequest:
    """One process to sample, with the options of `sample_process`."""

    pid: int
    role: Role
    samples: int = 5
    interval: float = 0.2
    native: bool = True
    locals: bool = False
    timeout: float = 5.0
    proc_root: PathLike = "/proc"


def sample_process(
    pid: int,
    role: Role,
    *,
    samples: int = 5,
    interval: float = 0.2,
    native: bool = True,
    locals: bool = False,
    timeout: float = 5.0,
    proc_root: PathLike = "/proc",
) -> ProcessSample:
    """Read /proc and dump `pid` with py-spy `samples` times, `interval` seconds apart.

    Raises ProcessGone if the process does not exist, and PermissionDenied or
    PySpyNotFound when py-spy cannot be used at all. A process that exits
    midway, a py-spy timeout or a failing `--native` is reported in `errors`.
    """
    request = SampleRequest(pid, role, samples, interval, native, locals, timeout, proc_root)
    (result,) = sample_many([request], max_workers=1)
    if isinstance(result, SamplerError):
        raise result
    return result


def sample_many(
    requests: Sequence[SampleRequest],
    max_workers: int = 4,
    on_done: Callable[[int], None] | None = None,
) -> list[ProcessSample | SamplerError]:
    """Sample several processes together, at most `max_workers` dumps at once; in input order.

    The processes take turns: a worker always takes the process whose next
    sample is due first, and a process is due `interval` seconds after its
    previous dump ended. So every process is dumped once before any is dumped
    twice, and N processes x S samples take about S rounds (each as long as
    the interval or as N dumps over the workers, whichever is longer), not
    N x S x interval. A process that cannot be sampled (gone before the first
    dump, permission denied, no py-spy) yields its SamplerError in its place.
    `on_done(finished)` is called from the calling thread whenever processes
    have finished, with how many have so far.
    """
    if not requests:
        return []
    targets = [_Target(request) for request in requests]
    schedule = _Schedule(targets)
    workers = [
        threading.Thread(target=schedule.work, name=f"pcd-sampler-{index}", daemon=True)
        for index in range(max(1, min(max_workers, len(targets))))
    ]
    for worker in workers:
        worker.start()
    try:
        reported = 0
        while (finished := schedule.wait_for_progress(reported)) is not None:
            if on_done is not None:
                on_done(finished)
            reported = finished
    finally:
        schedule.stop()
        for worker in workers:
            worker.join()
    if schedule.crash is not None:
        raise schedule.crash
    return [target.result() for target in targets]


class _Schedule:
    """The targets still to sample, earliest due first, shared by the worker threads."""

    def __init__(self, targets: list[_Target]) -> None:
        self.targets = targets
        # (due, input position): ties go in input order.
        self.queue = [(0.0, index) for index in range(len(targets))]
        self.remaining = len(targets)
        self.changed = threading.Condition()
        self.stopped = False
        #: An unexpected exception in a worker (a bug, not a SamplerError); re-raised by sample_many.
        self.crash: BaseException | None = None

    def work(self) -> None:
        while True:
            with self.changed:
                while not self.queue and not self.stopped and self.remaining:
                    self.changed.wait()
                if self.stopped or not self.remaining:
                    return
                _, index = heapq.heappop(self.queue)
            target = self.targets[index]
            try:
                target.step()
            except BaseException as exc:  # surfaced in the caller's thread
                with self.changed:
                    self.crash = self.crash or exc
                    self.stopped = True
                    self.changed.notify_all()
                return
            with self.changed:
                if target.done:
                    self.remaining -= 1
                else:
                    heapq.heappush(self.queue, (target.due, index))
                self.changed.notify_all()

    def wait_for_progress(self, reported: int) -> int | None:
        """How many targets have finished, once it is more than `reported`; None when all are done."""
        with self.changed:
            while not self.stopped and self.remaining and len(self.targets) - self.remaining == reported:
                self.changed.wait()
            finished = len(self.targets) - self.remaining
            if finished != reported:
                return finished
            return None

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()


class _Target:
    """One process being sampled: what `sample_process` used to keep in its loop's locals."""

    def __init__(self, request: SampleRequest) -> None:
        self.request = request
        self.first: ProcSnapshot | None = None
        self.proc: ProcSnapshot | None = None
        self.dumps: list[tuple[ThreadSample, ...]] = []
        self.errors: list[str] = []
        self.use_native = request.native
        #: A native dump was taken (`_wants_native`).
        self.native_taken = False
        self.index = 0
        self.due = 0.0
        self.done = False
        self.python = True
        self.failure: SamplerError | None = None
        #: Dumps refused with EPERM although we are root: another debugger (a second doctor,
        #: `watch` beside `resolve`) had the process attached at that moment.
        self.busy = 0
        self.lines: SourceLines = {}

    def step(self) -> None:
        """Wait until this process is due, then take its next sample (/proc, then one py-spy dump)."""
        request = self.request
        delay = self.due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            self._sample(request)
        finally:
            self.index += 1
            self.due = time.monotonic() + request.interval
            if self.index >= request.samples:
                self.done = True

    def _sample(self, request: SampleRequest) -> None:
        pid, proc_root = request.pid, request.proc_root
        # The TCP peers are read on the first and the last sample only (see read_process).
        full = self.first is None or self.index >= request.samples - 1
        snapshot = read_process(pid, proc_root, read_sockets=full)
        if self.first is None:
            if snapshot is None:
                self._fail(ProcessGone(f"process {pid} does not exist"))
                return
            self.first = snapshot
            if request.samples < 1:
                self.proc = snapshot
                return
        elif snapshot is None or not still_same(self.first, snapshot):
            self._stop(EXITED)
            return
        self.proc = snapshot if full else dataclasses.replace(snapshot, sockets=self.first.sockets)
        want_native = self._wants_native()
        try:
            threads, native_worked = _dump(
                pid, want_native, request.locals, request.timeout, proc_root, self.errors
            )
            if want_native:
                self.use_native = native_worked
                self.native_taken = native_worked
        except NotPython:
            # py-spy says this also of a process that exits while it attaches.
            if self._exited():
                self._stop(EXITED)
                return
            self.python = False
            self.done = True
            return
        except ProcessGone:
            self._stop(EXITED)
            return
        except SampleTimeout as exc:
            # A target that stalled py-spy once will stall it again: stop ptracing it.
            self._stop(str(exc))
            return
        except PermissionDenied as exc:
            # As root, ptrace is refused only while another tracer holds the process: try again.
            if os.geteuid() == 0 and self.busy < _BUSY_RETRIES:
                self.busy += 1
                _note(self.errors, "another debugger had the process attached; the dump was tried again")
                time.sleep(_BUSY_WAIT_SECONDS)
                self.index -= 1  # this round does not count: `step` tries it again
                return
            self._fail(exc)
            return
        except PySpyNotFound as exc:
            self._fail(exc)
            return
        except SamplerError as exc:
            # A dump can fail while the target changes its threads; the next one may work.
            _note(self.errors, str(exc))
            return
        self.dumps.append(merge(threads, snapshot, proc_root, self.lines))

    def _wants_native(self) -> bool:
        """Whether this dump should be native. Native stacks cost ~10x a plain dump and pause the
        target as long (py-spy's unwinding: 35-50 ms against 2-6 ms): one at most, and only where
        the plain dump before it leaves a thread's call unexplained (C code running, or a call that
        neither its Python frames, its syscall nor its wait channel name); a process sampled once
        has no dump before, so its one dump is native."""
        if not self.use_native or self.native_taken:
            return False
        if not self.dumps:
            return self.index >= self.request.samples - 1
        return any(unexplained(thread) for thread in self.dumps[-1])

    def _exited(self) -> bool:
        """True when the process is gone (or a zombie, or its PID reused) since the first sample."""
        assert self.first is not None  # read before any dump
        now = read_process(self.request.pid, self.request.proc_root, read_sockets=False)
        return not still_same(self.first, now)

    def _stop(self, message: str) -> None:
        _note(self.errors, message)
        self.done = True

    def _fail(self, error: SamplerError) -> None:
        self.failure = error
        self.done = True

    def result(self) -> ProcessSample | SamplerError:
        if self.failure is not None:
            return self.failure
        assert self.proc is not None  # a target without a first snapshot has failed
        return ProcessSample(
            pid=self.request.pid,
            role=self.request.role,
            proc=self.proc,
            dumps=tuple(self.dumps),
            native=self.native_taken and self.python,
            errors=tuple(self.errors),
            python=self.python,
        )


#: The source lines one process's frames stand at, read once per sampling: (file, line) → the code.
SourceLines: TypeAlias = "dict[tuple[str, int], str | None]"


def merge(
    threads: tuple[ThreadSample, ...],
    proc: ProcSnapshot,
    proc_root: PathLike,
    lines: SourceLines | None = None,
) -> tuple[ThreadSample, ...]:
    """Attach to each py-spy thread its kernel view from `proc` and each Python frame's source line.

    `lines`: the lines already read for this process (its earlier dumps); those read now are added.
    A Prefect engine has dozens of threads waiting at the same few lines, dump after dump."""
    lines = {} if lines is None else lines
    by_tid = {thread.tid: thread for thread in proc.threads}
    if proc.ns_pid != proc.pid:
        # In a container py-spy reports namespace-local tids; /proc here shows ours.
        ns_tids = thread_ns_tids(proc.pid, proc_root)
        by_tid = {ns_tid: by_tid[tid] for ns_tid, tid in ns_tids.items() if tid in by_tid}
    kernels = [by_tid.get(t.native_id) if t.native_id is not None else None for t in threads]
    unmatched = [k for k in proc.threads if k not in kernels]
    if kernels.count(None) == 1 and len(unmatched) == 1:
        # py-spy gives no os_thread_id for Python < 3.11 in a PID namespace; one left is that one.
        kernels[kernels.index(None)] = unmatched[0]
    return tuple(
        dataclasses.replace(
            thread,
            kernel=kernel,
            frames=tuple(_with_code(frame, proc, proc_root, lines) for frame in thread.frames),
        )
        for thread, kernel in zip(threads, kernels, strict=True)
    )


def _dump(
    pid: int,
    native: bool,
    locals: bool,
    timeout: float,
    proc_root: PathLike,
    errors: list[str],
) -> tuple[tuple[ThreadSample, ...], bool]:
    """One dump, native if asked and possible; also returns whether it was native."""
    if native:
        try:
            return dump(pid, native=True, locals=locals, timeout=timeout, proc_root=proc_root), True
        except NativeUnavailable as exc:
            _note(errors, f"py-spy --native failed ({exc}); fell back to plain dumps")
    return dump(pid, native=False, locals=locals, timeout=timeout, proc_root=proc_root), False


def _with_code(frame: Frame, proc: ProcSnapshot, proc_root: PathLike, lines: SourceLines) -> Frame:
    where = (frame.filename, frame.line)
    if where not in lines:
        lines[where] = read_source_line(
            proc.pid, frame.filename, frame.line, proc_root, start=proc.start_time_ticks
        )
    return dataclasses.replace(frame, code=lines[where])


def _note(errors: list[str], message: str) -> None:
    if message not in errors:
        errors.append(message)
