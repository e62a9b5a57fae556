import pytest

from rdzv_core.testing import BackendConformance, StoreConformance, StoreTypeConformance
from rdzv_mine.store import MyStore


@pytest.fixture
def factory(tmp_path):  # () -> a NEW client of ONE shared, empty store
    return lambda: MyStore(tmp_path / "db")


class TestMyStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, factory):
        return factory


class TestMyBackend(BackendConformance):
    @pytest.fixture
    def store_factory(self, factory):
        return factory


class TestMyType(StoreTypeConformance):
    store_type = "mine"

    @pytest.fixture
    def endpoint(self, tmp_path):
        return str(tmp_path / "db")

    @pytest.fixture
    def unreachable(self, tmp_path):
        return {"endpoint": str(tmp_path / "no" / "db")}
