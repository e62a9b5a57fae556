"""StoreBackend beyond the suite: failure wrapping, torch's token rules and quirks."""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Sequence
from datetime import timedelta

import pytest

from rdzv_core import (
    RendezvousConnectionError,
    RendezvousStateError,
    StoreBackend,
    StoreError,
    StoreTimeoutError,
)
from rdzv_core.storekit import Value
from rdzv_core.testing import MemoryStore

MESSAGE = "The connection to the C10d store has failed. See inner exception for details."


class FailingStore(MemoryStore):
    """A MemoryStore whose reads and writes fail with a chosen error once armed."""

    def __init__(self) -> None:
        super().__init__()
        self.error: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.error is not None:
            raise self.error

    def get(self, key: str) -> bytes:
        self._maybe_fail()
        return super().get(key)

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        self._maybe_fail()
        return super().compare_set(key, expected, desired)

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        self._maybe_fail()
        super().wait(keys, timeout)


@pytest.mark.parametrize(
    "error",
    [
        StoreError("down"),
        StoreTimeoutError("slow"),
        TimeoutError("t"),
        OSError("reset"),
        ValueError("bad"),
        RuntimeError("boom"),
        ConnectionResetError("r"),
    ],
)
def test_store_failures_become_connection_errors(error: Exception) -> None:
    store = FailingStore()
    backend = StoreBackend(store, "run")
    store.error = error
    for call in (backend.get_state, lambda: backend.set_state(b"x")):
        with pytest.raises(RendezvousConnectionError) as info:
            call()
        assert str(info.value) == MESSAGE
        assert info.value.__cause__ is error


def test_construction_failure_is_connection_error() -> None:
    store = FailingStore()
    store.error = StoreError("down")
    with pytest.raises(RendezvousConnectionError, match="C10d store"):
        StoreBackend(store, "run")


def test_empty_run_id() -> None:
    with pytest.raises(ValueError, match="^The run id must be a non-empty string.$"):
        StoreBackend(MemoryStore(), "")


def test_missing_key_times_out_into_connection_error() -> None:
    store = MemoryStore(timeout=timedelta(seconds=0.1))
    backend = StoreBackend(store, "run")
    store.delete_key("torch.rendezvous.run")
    with pytest.raises(RendezvousConnectionError) as info:
        backend.get_state()
    assert isinstance(info.value.__cause__, StoreTimeoutError)


@pytest.mark.parametrize("raw", ["abc", "!!!!", "Y2Fu@W1h"])
def test_corrupt_state(raw: str) -> None:
    store = MemoryStore()
    backend = StoreBackend(store, "run")
    store.set("torch.rendezvous.run", raw)
    with pytest.raises(RendezvousStateError) as info:
        backend.get_state()
    assert str(info.value) == "The state object is corrupt. See inner exception for details."


def test_token_is_the_stored_text_and_falsy_tokens_mean_none() -> None:
    store = MemoryStore()
    backend = StoreBackend(store, "run")
    assert backend.set_state(b"S1", "") == (b"S1", b"UzE=", True)
    assert backend.set_state(b"S2", 0) == (b"S1", b"UzE=", False)
    assert backend.set_state(b"S2", b"UzE=") == (b"S2", b64encode(b"S2"), True)


def test_stale_token_with_equal_state_reports_set() -> None:
    backend = StoreBackend(MemoryStore(), "run")
    first = backend.set_state(b"same")
    assert first is not None
    assert backend.set_state(b"same", b"stale") == (b"same", first[1], True)


def test_existing_state_survives_new_backend_and_empty_value_is_reseeded() -> None:
    store = MemoryStore()
    StoreBackend(store, "run").set_state(b"kept")
    assert StoreBackend(store, "run").get_state() == (b"kept", b64encode(b"kept"))
    store.set("torch.rendezvous.other", "")
    StoreBackend(store, "other")
    assert store.get("torch.rendezvous.other") == b"Y2FuaW1hZGFt"
