"""A scan with Kubernetes runs but no Kubernetes connection: those runs say why, the scan goes on.

GIVEN a run whose `infrastructure_pid` names a Kubernetes Job, and no kubeconfig,
no KUBECONFIG and no service account, WHEN it is located, THEN it is
`not_attachable` with what to configure, instead of failing the whole scan.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.kubernetes.locate import KubeSession
from prefect_cancel_doctor.scan.engine import Options, _kubernetes_job


def test_missing_kubeconfig_makes_the_run_not_attachable(tmp_path: Path) -> None:
    here = SimpleNamespace(kube=lambda: KubeSession(str(tmp_path / "missing")), options=Options())
    infra = parse_infrastructure_pid("prod:etl-x7k2p")

    location = _kubernetes_job(SimpleNamespace(id="r1"), infra, here)  # type: ignore[arg-type]

    assert location.unreachable is not None
    assert "Kubernetes job prod/etl-x7k2p" in location.unreachable
    assert "does not exist" in location.unreachable and "--kubeconfig" in location.unreachable
