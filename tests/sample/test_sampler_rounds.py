"""The sampler's schedule: rounds over all targets, the interval kept per process, errors in place.

/proc and py-spy are replaced by fakes that record when each process was read
and dumped; the real thing is covered by tests/sample/test_sampler.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from prefect_cancel_doctor.kinds import Location
from prefect_cancel_doctor.kinds.base import Job
from prefect_cancel_doctor.model import ProcessSample, ProcSnapshot, ThreadSample
from prefect_cancel_doctor.proc.procfs import PathLike
from prefect_cancel_doctor.sample import PermissionDenied, ProcessGone, SampleRequest, sample_many, sampler
from prefect_cancel_doctor.scan import engine
from tests.helpers import proc_snapshot

GONE = 999_999


def snapshot(pid: int) -> ProcSnapshot:
    return proc_snapshot(pid, start_time_ticks=100)


class FakeHost:
    """Stands in for /proc and py-spy; records (event, pid, time) and the socket reads."""

    def __init__(self, denied: frozenset[int] = frozenset()) -> None:
        self.events: list[tuple[str, int, float]] = []
        self.socket_reads: list[tuple[int, bool]] = []
        self.denied = denied
        self.lock = threading.Lock()

    def read_process(
        self, pid: int, proc_root: PathLike = "/proc", *, read_sockets: bool = True
    ) -> ProcSnapshot | None:
        with self.lock:
            self.socket_reads.append((pid, read_sockets))
        return None if pid == GONE else snapshot(pid)

    def dump(
        self, pid: int, native: bool, locals: bool, timeout: float, proc_root: PathLike, errors: list[str]
    ) -> Any:
        if pid in self.denied:
            raise PermissionDenied("ptrace refused")
        with self.lock:
            self.events.append(("start", pid, time.monotonic()))
        time.sleep(0.02)  # a dump takes a while
        with self.lock:
            self.events.append(("end", pid, time.monotonic()))
        return (
            ThreadSample(
                thread_id=1, native_id=pid, name="MainThread", active=False, owns_gil=False, frames=()
            ),
        ), native


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost(denied=frozenset({4242}))
    monkeypatch.setattr(sampler, "read_process", fake.read_process)
    monkeypatch.setattr(sampler, "_dump", fake.dump)
    return fake


def requests(pids: list[int], samples: int = 3, interval: float = 0.1) -> list[SampleRequest]:
    return [SampleRequest(pid, "engine", samples=samples, interval=interval) for pid in pids]


def test_every_target_is_dumped_once_per_round(host: FakeHost) -> None:
    pids = list(range(101, 109))

    results = sample_many(requests(pids), max_workers=4)

    assert all(isinstance(r, ProcessSample) and len(r.dumps) == 3 for r in results)
    starts = [pid for event, pid, _ in host.events if event == "start"]
    assert [sorted(starts[i : i + 8]) for i in (0, 8, 16)] == [pids, pids, pids]


def test_a_process_is_dumped_again_only_after_the_interval(host: FakeHost) -> None:
    interval = 0.1
    sample_many(requests([101, 102], samples=4, interval=interval), max_workers=2)

    for pid in (101, 102):
        starts = [t for event, p, t in host.events if p == pid and event == "start"]
        ends = [t for event, p, t in host.events if p == pid and event == "end"]
        assert len(starts) == 4
        assert all(start - end >= interval * 0.95 for end, start in zip(ends[:-1], starts[1:], strict=True))


def test_rounds_do_not_multiply_the_interval_by_the_targets(host: FakeHost) -> None:
    """20 targets x 5 samples, 0.2 s apart: about 5 rounds, not 20 x 5 x 0.2 s / 4 workers."""
    started = time.monotonic()
    results = sample_many(requests(list(range(201, 221)), samples=5, interval=0.2), max_workers=4)
    elapsed = time.monotonic() - started

    assert all(isinstance(r, ProcessSample) and len(r.dumps) == 5 for r in results)
    # Per round: 20 dumps of 20 ms over 4 workers = 0.1 s (< interval); 5 rounds ≈ 0.2 x 4 + 0.1.
    assert elapsed < 2.5, elapsed


def test_sockets_are_read_on_the_first_and_the_last_sample_only(host: FakeHost) -> None:
    sample_many(requests([101], samples=5), max_workers=1)

    assert [full for _, full in host.socket_reads] == [True, False, False, False, True]


def test_errors_stay_in_place_and_progress_counts_finished_processes(host: FakeHost) -> None:
    done: list[int] = []

    results = sample_many(requests([101, GONE, 4242, 102]), max_workers=2, on_done=done.append)

    assert isinstance(results[0], ProcessSample) and isinstance(results[3], ProcessSample)
    assert isinstance(results[1], ProcessGone)
    assert isinstance(results[2], PermissionDenied)
    assert done == sorted(done) and done[-1] == 4


def test_a_process_shared_by_two_runs_is_sampled_once(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [
        Job(None, Location("process", "a", pids=((301, "engine"), (303, "runner"))), []),
        Job(None, Location("process", "b", pids=((302, "engine"), (303, "runner"))), []),
    ]
    progress: list[tuple[str, int, int]] = []

    engine._sample_all(jobs, engine.Options(samples=2, interval=0.0), lambda *args: progress.append(args))

    assert sorted(pid for event, pid, _ in host.events if event == "start") == [301, 301, 302, 302, 303, 303]
    assert [(s.pid, s.role) for s in jobs[0].samples] == [(301, "engine"), (303, "runner")]
    assert jobs[0].samples[1] is jobs[1].samples[1]
    assert progress[0] == ("sampling", 0, 3) and progress[-1] == ("sampling", 3, 3)
