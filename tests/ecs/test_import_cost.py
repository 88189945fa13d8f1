"""ECS support costs nothing to runs that are not on ECS.

GIVEN a Prefect API with no runs, WHEN a whole `scan` runs in a fresh interpreter (and `--help` is
printed), THEN neither boto3 nor botocore, nor the ECS client, reader, locator, rules or stopper is
imported: only the kind's class (`kinds/ecs/kind.py`), which the registry holds.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import modules_loaded
from tests.scan.test_import_path import empty_api  # noqa: F401  (the fixture)

ECS_MODULES = {
    "boto3",
    "botocore",
    "prefect_cancel_doctor.clients.ecs_api",
    "prefect_cancel_doctor.clients.ecs_api.client",
    "prefect_cancel_doctor.kinds.ecs.read",
    "prefect_cancel_doctor.kinds.ecs.facts",
    "prefect_cancel_doctor.kinds.ecs.locate",
    "prefect_cancel_doctor.kinds.ecs.stop",
    "prefect_cancel_doctor.kinds.ecs.view",
}


def test_scan_and_help_load_no_ecs_module(empty_api: str, tmp_path: Path) -> None:  # noqa: F811
    scan = modules_loaded("scan", "--api-url", empty_api, "--format", "json", home=tmp_path)
    assert "prefect_cancel_doctor.scan.engine" in scan  # the scan ran
    help_ = modules_loaded("inspect", "--help", home=tmp_path, exit_code=None)
    assert scan & ECS_MODULES == set()
    assert help_ & ECS_MODULES == set()
