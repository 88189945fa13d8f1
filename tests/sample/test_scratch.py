"""Where the /proc trees rebuilt from a container's rounds are written (sample/namespace.py)."""

from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace

import pytest

from prefect_cancel_doctor.sample import namespace
from prefect_cancel_doctor.sample.namespace import SHM_MIN_FREE, scratch_root


def statvfs_with(free: int) -> object:
    def statvfs(path: str) -> SimpleNamespace:
        assert path == "/dev/shm"
        return SimpleNamespace(f_bavail=free // 4096, f_frsize=4096)

    return statvfs


def test_the_trees_go_to_memory_when_it_has_room(monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.access("/dev/shm", os.W_OK), "this machine has a writable /dev/shm"
    monkeypatch.setattr(namespace.os, "statvfs", statvfs_with(SHM_MIN_FREE))
    assert scratch_root() == "/dev/shm"
    with tempfile.TemporaryDirectory(prefix="pcd-test-", dir=scratch_root()) as scratch:
        assert scratch.startswith("/dev/shm/") and os.stat(scratch).st_mode & 0o077 == 0


def test_a_small_dev_shm_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # A container's /dev/shm is 64 MB unless said otherwise: the trees of 16 pods at once would fill it.
    monkeypatch.setattr(namespace.os, "statvfs", statvfs_with(64 * 2**20))
    assert scratch_root() is None


def test_no_dev_shm_is_the_temp_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(path: str) -> None:
        raise FileNotFoundError(path)

    monkeypatch.setattr(namespace.os, "statvfs", missing)
    assert scratch_root() is None
