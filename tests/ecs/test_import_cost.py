"""ECS support costs nothing to runs that are not on ECS.

GIVEN a Prefect API with no runs, WHEN a whole `scan` runs in a fresh interpreter (and `--help` is
printed), THEN neither boto3 nor botocore, nor the ECS client, reader, locator, rules or stopper is
imported: only the kind's class (`kinds/ecs/kind.py`), which the registry holds.
"""

from __future__ import annotations

from pathlib import Path

from tests.kubernetes.test_import_cost import loaded
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
    scan = (
        "import os, sys\n"
        f"os.environ['PREFECT_HOME'] = {str(tmp_path)!r}\n"
        f"sys.argv = ['prefect-cancel-doctor', 'scan', '--api-url', {empty_api!r}, '--format', 'json']\n"
        "from prefect_cancel_doctor.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
    )
    help_ = (
        "import sys\nsys.argv = ['prefect-cancel-doctor', 'inspect', '--help']\n"
        "from prefect_cancel_doctor.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )

    assert loaded(scan) & ECS_MODULES == set()
    assert loaded(help_) & ECS_MODULES == set()
