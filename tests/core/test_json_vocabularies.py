"""The worker status and how a run was found are enums whose values are the strings the JSON
always carried."""

from __future__ import annotations

from prefect_cancel_doctor.model import FoundBy, InfraKind, Target, WorkerInfo, WorkerStatus, to_plain


def test_the_json_keeps_its_strings() -> None:
    assert [s.value for s in FoundBy] == ["infrastructure_pid", "PREFECT__FLOW_RUN_ID", "serve"]
    assert to_plain(Target(InfraKind.PROCESS, "local"))["found_by"] == "infrastructure_pid"
    assert to_plain(Target(InfraKind.PROCESS, "local", found_by=FoundBy.SERVE))["found_by"] == "serve"
    worker = WorkerInfo("w1", WorkerStatus.ONLINE, None, None)
    assert to_plain(worker)["status"] == "ONLINE"


def test_a_worker_status_is_parsed_at_the_boundary() -> None:
    assert WorkerStatus.parse("ONLINE") is WorkerStatus.ONLINE
    assert WorkerStatus.parse("OFFLINE") is WorkerStatus.OFFLINE
    assert WorkerStatus.parse(None) is None
    assert WorkerStatus.parse("SLEEPY") is WorkerStatus.UNKNOWN
    # The rules compare with the enum; a status given as its string compares the same.
    assert WorkerInfo("w1", "ONLINE", None, None).status == WorkerStatus.ONLINE  # type: ignore[arg-type]
