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

from tests.helpers import modules_loaded
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
    scan = modules_loaded("scan", "--api-url", empty_api, "--format", "json", home=tmp_path)
    assert "prefect_cancel_doctor.scan.engine" in scan  # the scan ran
    help_ = modules_loaded("--help", home=tmp_path, exit_code=None)
    assert scan & KUBE_MODULES == set()
    assert help_ & KUBE_MODULES == set()
