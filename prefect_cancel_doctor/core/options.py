"""How a scan reaches and samples its targets: the options every kind of target reads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

#: Where the debug image of Kubernetes' ephemeral mode is read from when no flag names it (read here,
#: once, when the options are made: nothing below reads the environment for it).
DEBUG_IMAGE_ENV = "PCD_KUBE_DEBUG_IMAGE"


def default_parallel() -> int:
    """py-spy dumps at once by default: one a CPU, at most 4.

    More dumps than CPUs compete for them, and a target stays stopped while its
    dump waits: on 2 cores, 4 at once doubled the worst pause of a `--native`
    dump (95 ms against 46 ms) for no shorter a scan (bench/pause.py, sampling.py).
    """
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Options:
    """How to sample; every field has a CLI flag and a PCD_* variable."""

    samples: int = 5
    interval: float = 0.2
    native: bool = True
    locals: bool = False
    since: timedelta = timedelta(hours=1)
    parallel: int = field(default_factory=default_parallel)
    timeout: float = 10.0
    proc_root: str = "/proc"
    #: The Prefect UI's base URL, for each run's link; None: derived from the API URL (`links`).
    ui_url: str | None = None
    #: Kubernetes runs: the kubeconfig and context (None: as kubectl resolves them, `kube_config`).
    kubeconfig: str | None = None
    kube_context: str | None = None
    #: Kubernetes runs, ephemeral mode: the image of the doctor's ephemeral container (`--debug-image`,
    #: else PCD_KUBE_DEBUG_IMAGE; None: none chosen, and the locator says how to choose one).
    kube_debug_image: str | None = field(default_factory=lambda: os.environ.get(DEBUG_IMAGE_ENV) or None)
