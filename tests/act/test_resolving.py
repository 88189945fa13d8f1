"""A resolve as a person asks for it: the confirmations (`resolving.resolve_runs`) and the
grace period counted down (`resolving.countdown`), without a server or a process."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_cancel_doctor.act import resolving
from prefect_cancel_doctor.act.resolve import Declined
from prefect_cancel_doctor.act.resolving import PLAN_QUESTION, countdown, resolve_runs
from prefect_cancel_doctor.errors import EXIT_DECLINED, EXIT_INTERRUPTED, EXIT_USAGE, ConfigurationError


def _resolve(**asked: Any) -> list[str]:
    settings: dict[str, Any] = {
        "yes": False,
        "interactive": True,
        "ask": lambda question: False,
        "dry_run": False,
        "grace": 0.0,
        "say": lambda line: None,
        "wait": lambda what, seconds, done: done(),
    }
    return resolve_runs([], None, **{**settings, **asked})  # type: ignore[arg-type]


def test_without_a_terminal_and_without_yes_nothing_is_done() -> None:
    asked: list[str] = []
    with pytest.raises(ConfigurationError, match="stdin is not a terminal; pass --yes"):
        _resolve(interactive=False, ask=asked.append)
    assert asked == []


def test_on_a_terminal_the_plan_is_asked_about_and_a_no_refuses() -> None:
    asked: list[str] = []

    def ask(question: str) -> bool:
        asked.append(question)
        return False

    with pytest.raises(Declined, match=r"^declined: nothing was done$") as declined:
        _resolve(ask=ask)
    assert asked == [PLAN_QUESTION]
    # A no is no error: not the usage error's code, nor any other code of the family.
    assert declined.value.exit_code == EXIT_DECLINED == 5
    assert EXIT_DECLINED not in (0, 1, EXIT_USAGE, 3, 4, EXIT_INTERRUPTED)


def test_a_countdown_off_a_terminal_says_once_what_it_awaits() -> None:
    written: list[str] = []
    calls = iter([False, False, True, True])
    assert countdown("waiting for exit", 5, lambda: next(calls), write=written.append, live=False)
    assert written == ["  waiting for exit (up to 5 s)\n", "  exited within 1 s\n"]


class _Clock:
    """`resolving`'s time: `sleep` moves it on at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(resolving, "time", fake)
    return fake


def test_a_countdown_on_a_terminal_says_when_the_process_exited_over_the_seconds_left(clock: _Clock) -> None:
    written: list[str] = []
    start = clock.now
    exits_at = start + 3.1  # the process exits 3 s into a 30 s grace period

    what = "waiting for 1 process(es) to exit"
    assert countdown(what, 30, lambda: clock.now >= exits_at, write=written.append, live=True)
    assert written[0] == "\r  waiting for 1 process(es) to exit:  30 s left "
    assert "\r  waiting for 1 process(es) to exit:  27 s left " in written
    last = written[-1]
    assert last.startswith("\r  waiting for 1 process(es) to exit: exited after 3 s") and last.endswith("\n")
    assert "left" not in last
    # It overwrites the whole countdown line: no "s left" is left over at its end.
    assert len(last.rstrip("\n")) >= max(len(w) for w in written[:-1])


def test_a_countdown_off_a_terminal_says_how_it_ended(clock: _Clock) -> None:
    written: list[str] = []
    exits_at = clock.now + 2.1
    assert countdown("waiting for exit", 30, lambda: clock.now >= exits_at, write=written.append, live=False)
    assert written == ["  waiting for exit (up to 30 s)\n", "  exited after 2 s\n"]


def test_a_countdown_whose_time_is_up_says_it_still_runs(clock: _Clock) -> None:
    written: list[str] = []
    assert not countdown("waiting for exit", 5, lambda: False, write=written.append, live=True)
    assert written[-1].startswith("\r  waiting for exit: still running after 5 s")
    assert written[-1].endswith("\n")


def test_a_countdown_already_done_writes_nothing() -> None:
    written: list[str] = []
    assert countdown("waiting", 5, lambda: True, write=written.append, live=True)
    assert written == []
