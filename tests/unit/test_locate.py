"""Every infrastructure_pid form Prefect's workers write."""

from __future__ import annotations

import pytest

from prefect_cancel_doctor.locate import parse_infrastructure_pid

CONTAINER = "3f1c" + "a" * 60


@pytest.mark.parametrize(
    ("raw", "kind", "detail"),
    [
        ("3055", "process", {"pid": 3055, "host": None}),
        ("worker-7:3055", "process", {"pid": 3055, "host": "worker-7"}),
        (f"http+docker://localhost:{CONTAINER}", "docker", {"container_id": CONTAINER}),
        (f"unix:///var/run/docker.sock:{CONTAINER}", "docker", {"docker_url": "unix:///var/run/docker.sock"}),
        ("prefect:etl-job-x7k2q", "kubernetes", {"namespace": "prefect", "job": "etl-job-x7k2q"}),
        ("6d1c1a7e-uid:prefect:etl-job", "kubernetes", {"namespace": "prefect", "job": "etl-job"}),
        ("prod-cluster::arn:aws:ecs:us-east-1:1:task/prod/abc", "ecs", {"namespace": "prod-cluster"}),
        (None, "none", {}),
        ("", "none", {}),
        ("???", "unknown", {}),
    ],
)
def test_infrastructure_pid_forms(raw: str | None, kind: str, detail: dict[str, object]) -> None:
    ref = parse_infrastructure_pid(raw)
    assert ref.kind == kind
    for key, value in detail.items():
        assert getattr(ref, key) == value
