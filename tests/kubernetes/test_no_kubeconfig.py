"""A scan with Kubernetes runs but no Kubernetes connection: those runs say why, the scan goes on.

GIVEN a run whose `infrastructure_pid` names a Kubernetes Job, and no kubeconfig,
no KUBECONFIG and no service account, WHEN it is located, THEN it is
`not_attachable` with what to configure, instead of failing the whole scan.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from prefect_cancel_doctor.core.options import Options
from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.base import Here
from prefect_cancel_doctor.kinds.registry import kind_of


def test_missing_kubeconfig_makes_the_run_not_attachable(tmp_path: Path) -> None:
    here = Here({}, Options(kubeconfig=str(tmp_path / "missing")))
    infra = parse_infrastructure_pid("prod:etl-x7k2p")
    kind = kind_of(infra.kind)
    kind.prepare([], here)

    location = kind.locate(SimpleNamespace(id="r1"), infra, here)  # type: ignore[arg-type]

    assert location.unreachable is not None
    assert "Kubernetes job prod/etl-x7k2p" in location.unreachable
    assert "does not exist" in location.unreachable and "--kubeconfig" in location.unreachable
