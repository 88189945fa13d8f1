"""`diagnose RUN`: a flow run named by its id or by its name (as the scan's table shows it)."""

from __future__ import annotations

import re

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.prefect_records import FlowRun
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.errors import TargetError
from prefect_cancel_doctor.render.text import timestamp_text

#: What reads as a flow run id (a UUID, with or without its dashes); anything else is a name.
_RUN_ID = re.compile(r"[0-9a-fA-F-]{32,36}")
#: Candidates listed when a name is ambiguous.
LISTED = 20


def is_run_id(text: str) -> bool:
    """True when `text` is written like a flow run id rather than a run name."""
    return bool(_RUN_ID.fullmatch(text))


def find_run(api: PrefectApi, id_or_name: str) -> FlowRun:
    """The run with this id, else the one run with this name.

    `TargetError` (exit 2) when no run has the name, or when several do: then
    the message lists them (id, flow, state, start) so one can be picked by id.
    """
    if is_run_id(id_or_name):
        return api.flow_run(id_or_name)
    shown = visible(id_or_name, 100)
    runs = api.runs_named(id_or_name)
    if not runs:
        raise TargetError(
            f"no flow run named '{shown}' on {api.url}",
            hint="names are matched exactly; list the runs stuck in Cancelling with "
            "`prefect-cancel-doctor scan`, or pass the run's id",
        )
    if len(runs) == 1:
        return runs[0]
    runs.sort(key=lambda r: r.start_time or "", reverse=True)
    flows = api.names("flows", [r.flow_id for r in runs[:LISTED]])
    lines = [f"{len(runs)} flow runs are named '{shown}'; pick one by its id:"]
    for run in runs[:LISTED]:
        state = run.state.name if run.state and run.state.name else run.state_type.value.title()
        lines.append(
            f"  {run.id}  flow {flows.get(run.flow_id or '', '?')}  state {state}  "
            f"started {timestamp_text(run.start_time)}"
        )
    if len(runs) > LISTED:
        lines.append(f"  … and {len(runs) - LISTED} more")
    raise TargetError("\n".join(lines), hint=f"e.g. `prefect-cancel-doctor diagnose {runs[0].id}`")


__all__ = ["find_run", "is_run_id"]
