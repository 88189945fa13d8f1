"""Kubernetes support costs nothing to runs that are not on Kubernetes.

GIVEN a Prefect API with no runs, WHEN a whole `scan` runs in a fresh interpreter
(and `--help` is printed), THEN none of the Kubernetes modules (client,
kubeconfig, locator, pod sampler) nor PyYAML is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.scan.test_import_path import empty_api  # noqa: F401  (the fixture)

KUBE_MODULES = {
    "prefect_cancel_doctor.clients.kube_api",
    "prefect_cancel_doctor.clients.kube_config",
    "prefect_cancel_doctor.kinds.kubernetes.locate",
    "prefect_cancel_doctor.kinds.kubernetes.pod",
    "prefect_cancel_doctor.kinds.kubernetes.facts",
    "yaml",
}


def loaded(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_scan_and_help_load_no_kubernetes_module(empty_api: str, tmp_path: Path) -> None:  # noqa: F811
    scan = (
        "import os, sys\n"
        f"os.environ['PREFECT_HOME'] = {str(tmp_path)!r}\n"
        f"sys.argv = ['prefect-cancel-doctor', 'scan', '--api-url', {empty_api!r}, '--format', 'json']\n"
        "from prefect_cancel_doctor.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
    )
    help_ = (
        "import sys\nsys.argv = ['prefect-cancel-doctor', '--help']\n"
        "from prefect_cancel_doctor.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )

    assert loaded(scan) & KUBE_MODULES == set()
    assert loaded(help_) & KUBE_MODULES == set()
