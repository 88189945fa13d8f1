"""An exec credential plugin that hangs is stopped at its timeout with everything it started.

GIVEN a kubeconfig whose user runs a real plugin script that starts `sleep 300` (in the
background, and a second one it waits on) and never answers, WHEN the connection is resolved,
THEN it fails at the plugin's timeout with a configuration error, and no process of the
plugin's process group is left alive (before: the plugin was killed, its `sleep`s lived on).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from prefect_cancel_doctor.clients import kube_config
from prefect_cancel_doctor.clients.kube_config import KubeConfigError, resolve_kube_connection

pytestmark = pytest.mark.timeout(120)

PLUGIN = """#!/bin/sh
# a credential plugin that starts helpers and never answers
echo $$ > "{pids}"
sleep 300 &
echo $! >> "{pids}"
sleep 300 &
echo $! >> "{pids}"
wait
"""


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def test_a_hanging_plugin_is_stopped_with_its_whole_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "pids"
    plugin = tmp_path / "hanging-plugin"
    plugin.write_text(PLUGIN.format(pids=pids))
    plugin.chmod(0o755)
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, "
        f"command: '{plugin}'}}}}}}]\n"
    )
    monkeypatch.setattr(kube_config, "EXEC_TIMEOUT", 2.0)

    started = time.monotonic()
    with pytest.raises(KubeConfigError, match=r"did not answer within 2 s"):
        resolve_kube_connection(str(config), environ={"HOME": str(tmp_path), "PATH": os.environ["PATH"]})
    assert time.monotonic() - started < 5

    started_pids = [int(p) for p in pids.read_text().split()]
    assert len(started_pids) == 3, "the plugin and its two sleeps"
    try:
        deadline = time.monotonic() + 5
        while any(map(running, started_pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in started_pids if running(pid)] == [], "a process the plugin started outlived it"
    finally:
        for pid in started_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
