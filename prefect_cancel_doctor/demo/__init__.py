"""Real flow runs stuck in Cancelling, for the `demo` command and the end-to-end tests.

- `catalog`: the scenarios (no Prefect import; cheap to list).
- `scenarios/`: one small flow program per scenario.
- `harness`: `LocalPrefect`, a throw-away local Prefect server with workers.
- `environment`: `run_demo_environment()`, which stages scenarios for real.

Only `harness` and `environment` import Prefect; import them lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment


def run_demo_environment(
    scenarios: list[str] | None = None,
    console_log: Callable[[str], None] = print,
    **harness_options: Any,
) -> AbstractContextManager[DemoEnvironment]:
    """See `prefect_cancel_doctor.demo.environment.run_demo_environment` (imported lazily)."""
    from prefect_cancel_doctor.demo.environment import run_demo_environment as run

    return run(scenarios, console_log, **harness_options)


__all__ = ["run_demo_environment"]
