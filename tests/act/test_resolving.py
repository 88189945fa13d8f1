"""A resolve as a person asks for it: the confirmations (`resolving.resolve_runs`) and the
grace period counted down (`resolving.countdown`), without a server or a process."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_cancel_doctor.act.resolve import Refused
from prefect_cancel_doctor.act.resolving import PLAN_QUESTION, countdown, resolve_runs
from prefect_cancel_doctor.errors import ConfigurationError


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

    with pytest.raises(Refused, match="not confirmed"):
        _resolve(ask=ask)
    assert asked == [PLAN_QUESTION]


def test_a_countdown_off_a_terminal_says_once_what_it_awaits() -> None:
    written: list[str] = []
    calls = iter([False, False, True, True])
    assert countdown("waiting for exit", 5, lambda: next(calls), write=written.append, live=False)
    assert written == ["  waiting for exit (up to 5 s)\n"]


def test_a_countdown_on_a_terminal_redraws_the_seconds_left_and_ends_its_line() -> None:
    written: list[str] = []
    calls = iter([False, False, True, True])
    assert countdown("waiting for exit", 5, lambda: next(calls), write=written.append, live=True)
    assert written[0] == "\r  waiting for exit:   5 s left " and written[-1] == "\n"


def test_a_countdown_already_done_writes_nothing() -> None:
    written: list[str] = []
    assert countdown("waiting", 5, lambda: True, write=written.append, live=True)
    assert written == []
