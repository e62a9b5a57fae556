"""The shared conformance suite, run against the file store type."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from rdzv_plugin_file import FileStore

from rdzv_core import Store
from rdzv_core.testing import (
    BackendConformance,
    RendezvousScenarios,
    StoreConformance,
    StoreTypeConformance,
)


@pytest.fixture
def file_factory(tmp_path: Path) -> Callable[[], Store]:
    return functools.partial(FileStore, tmp_path / "store")  # picklable: other processes


class TestFileStore(StoreConformance):
    store_type = "file"

    @pytest.fixture
    def store_factory(self, file_factory: Callable[[], Store]) -> Callable[[], Store]:
        return file_factory


class TestFileBackend(BackendConformance):
    store_type = "file"

    @pytest.fixture
    def store_factory(self, file_factory: Callable[[], Store]) -> Callable[[], Store]:
        return file_factory


class TestFileStoreType(StoreTypeConformance):
    store_type = "file"

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> str:
        return str(tmp_path / "rendezvous.store")

    @pytest.fixture
    def unreachable(self, tmp_path: Path) -> dict[str, str]:
        return {"endpoint": str(tmp_path / "missing-directory" / "store")}


class TestFileRendezvous(RendezvousScenarios):
    store_type = "file"

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> str:
        return str(tmp_path / "rendezvous.store")
