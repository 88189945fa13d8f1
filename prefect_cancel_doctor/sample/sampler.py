"""Sample a process several times: /proc first, then py-spy, merged per thread."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prefect_cancel_doctor.model import Frame, ProcessSample, ProcSnapshot, ThreadSample
from prefect_cancel_doctor.sample.procfs import (
    PathLike,
    read_process,
    read_source_line,
    thread_ns_tids,
)
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


@dataclass(frozen=True)
class SampleRequest:
    """One process to sample, with the options of `sample_process`."""

    pid: int
    role: str
    samples: int = 5
    interval: float = 0.2
    native: bool = True
    locals: bool = False
    timeout: float = 5.0
    proc_root: PathLike = "/proc"


def sample_process(
    pid: int,
    role: str,
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
    first = read_process(pid, proc_root)
    if first is None:
        raise ProcessGone(f"process {pid} does not exist")
    proc: ProcSnapshot = first
    dumps: list[tuple[ThreadSample, ...]] = []
    errors: list[str] = []
    use_native = native
    for index in range(samples):
        if index:
            time.sleep(interval)
            snapshot = read_process(pid, proc_root)
            if (
                snapshot is None
                or snapshot.state == "Z"
                or snapshot.start_time_ticks != first.start_time_ticks
            ):
                _note(errors, EXITED)
                break
            proc = snapshot
        try:
            threads, use_native = _dump(pid, use_native, locals, timeout, proc_root, errors)
        except NotPython:
            return ProcessSample(
                pid=pid,
                role=role,
                proc=proc,
                dumps=tuple(dumps),
                native=False,
                errors=tuple(errors),
                python=False,
            )
        except ProcessGone:
            _note(errors, EXITED)
            break
        except SampleTimeout as exc:
            # A target that stalled py-spy once will stall it again: stop ptracing it.
            _note(errors, str(exc))
            break
        except (PermissionDenied, PySpyNotFound):
            raise
        except SamplerError as exc:
            # A dump can fail while the target changes its threads; the next one may work.
            _note(errors, str(exc))
            continue
        dumps.append(merge(threads, proc, proc_root))
    return ProcessSample(
        pid=pid,
        role=role,
        proc=proc,
        dumps=tuple(dumps),
        native=use_native,
        errors=tuple(errors),
    )


def sample_many(
    requests: Sequence[SampleRequest], max_workers: int = 4
) -> list[ProcessSample | SamplerError]:
    """Sample several processes in parallel (at most `max_workers` at once), in input order.

    A process that cannot be sampled yields its SamplerError in its place.
    """
    if not requests:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(requests)))) as pool:
        return list(pool.map(_sample_or_error, requests))


def merge(
    threads: tuple[ThreadSample, ...], proc: ProcSnapshot, proc_root: PathLike
) -> tuple[ThreadSample, ...]:
    """Attach to each py-spy thread its kernel view from `proc` and each Python frame's source line."""
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
            frames=tuple(_with_code(frame, proc.pid, proc_root) for frame in thread.frames),
        )
        for thread, kernel in zip(threads, kernels, strict=True)
    )


def _sample_or_error(request: SampleRequest) -> ProcessSample | SamplerError:
    try:
        return sample_process(
            request.pid,
            request.role,
            samples=request.samples,
            interval=request.interval,
            native=request.native,
            locals=request.locals,
            timeout=request.timeout,
            proc_root=request.proc_root,
        )
    except SamplerError as exc:
        return exc


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


def _with_code(frame: Frame, pid: int, proc_root: PathLike) -> Frame:
    return dataclasses.replace(frame, code=read_source_line(pid, frame.filename, frame.line, proc_root))


def _note(errors: list[str], message: str) -> None:
    if message not in errors:
        errors.append(message)
