"""BackendConformance: the backend contract (compare-and-set on tokens) over a store.

Opt in like :class:`StoreConformance` (one subclass, one ``store_factory`` fixture); the
backend under test is :class:`~rdzv_core.StoreBackend` over that store. A native backend
overrides the ``backend_factory`` and ``corrupt_state`` fixtures instead.
"""

from __future__ import annotations

import os
import threading
import uuid
from base64 import b64encode
from collections.abc import Callable

import pytest

from ..backend import NULL_SENTINEL, RendezvousBackend, StoreBackend, state_key
from ..errors import RendezvousStateError
from ._support import StoreFactory, SuiteBase

__all__ = ["BackendConformance"]

BackendFactory = Callable[[], RendezvousBackend]


class BackendConformance(SuiteBase):
    """The backend contract (``rdzv_core.RendezvousBackend``), over ``store_factory``'s store."""

    @pytest.fixture
    def run_id(self) -> str:
        return f"conformance-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def backend_factory(self, new_client: StoreFactory, run_id: str) -> BackendFactory:
        """A callable returning a new backend (on a new client) for one shared run."""
        return lambda: StoreBackend(new_client(), run_id)

    @pytest.fixture
    def backend(self, backend_factory: BackendFactory) -> RendezvousBackend:
        return backend_factory()

    @pytest.fixture
    def corrupt_state(self, new_client: StoreFactory, run_id: str) -> Callable[[], None]:
        """A callable that stores a state the backend cannot decode."""
        return lambda: new_client().set(state_key(run_id), "abc")

    def test_name_is_a_string(self, backend: RendezvousBackend) -> None:
        assert isinstance(backend.name, str) and backend.name, (
            "a backend must have a non-empty str name"
        )

    def test_get_state_is_none_before_any_set(self, backend: RendezvousBackend) -> None:
        assert backend.get_state() is None, "a fresh backend must have no state (None)"

    def test_set_state_without_token_creates_state(self, backend: RendezvousBackend) -> None:
        result = backend.set_state(b"S1")
        assert result is not None, "set_state must return (state, token, has_set)"
        state, token, has_set = result
        assert (state, has_set) == (b"S1", True), "the first set_state without a token must win"
        assert backend.get_state() == (b"S1", token), (
            "get_state must return what set_state wrote, with its token"
        )

    def test_set_state_with_current_token_updates(self, backend: RendezvousBackend) -> None:
        first = backend.set_state(b"S1")
        assert first is not None, "set_state must return (state, token, has_set)"
        result = backend.set_state(b"S2", first[1])
        assert result is not None and result[0] == b"S2" and result[2] is True, (
            "set_state with the current token must win"
        )
        assert backend.get_state() == (b"S2", result[1]), (
            "get_state must return the new state and token"
        )

    def test_set_state_with_stale_token_writes_nothing(self, backend: RendezvousBackend) -> None:
        first = backend.set_state(b"S1")
        assert first is not None, "set_state must return (state, token, has_set)"
        second = backend.set_state(b"S2", first[1])
        assert second is not None, "set_state must return (state, token, has_set)"
        result = backend.set_state(b"S3", first[1])
        assert result == (b"S2", second[1], False), (
            "a stale token must lose and return the current state and token"
        )
        assert backend.get_state() == (b"S2", second[1]), (
            "a losing set_state must not change the state"
        )

    def test_set_state_without_token_when_state_exists(self, backend: RendezvousBackend) -> None:
        first = backend.set_state(b"S1")
        assert first is not None, "set_state must return (state, token, has_set)"
        assert backend.set_state(b"S2") == (b"S1", first[1], False)

    @pytest.mark.parametrize("token", ["not a token", 12345, object()])
    def test_set_state_with_foreign_token_writes_nothing(
        self, backend: RendezvousBackend, token: object
    ) -> None:
        first = backend.set_state(b"S1")
        assert first is not None, "set_state must return (state, token, has_set)"
        assert backend.set_state(b"S2", token) == (b"S1", first[1], False)
        assert backend.get_state() == (b"S1", first[1])

    def test_foreign_token_without_state_returns_none(self, backend: RendezvousBackend) -> None:
        assert backend.set_state(b"S1", "not a token") is None
        assert backend.get_state() is None, "a fresh backend must have no state (None)"

    def test_state_is_shared_between_backends(self, backend_factory: BackendFactory) -> None:
        a, b = backend_factory(), backend_factory()
        result = a.set_state(b"shared")
        assert result is not None, "set_state must return (state, token, has_set)"
        assert b.get_state() == (b"shared", result[1]), (
            "another backend on the same store must read the same state and token"
        )
        updated = b.set_state(b"by b", result[1])
        assert updated is not None and updated[2], (
            "a token read by another backend must be accepted"
        )
        assert a.get_state() == (b"by b", updated[1]), (
            "the first backend must see the second one's write"
        )

    def test_new_backend_keeps_existing_state(self, backend_factory: BackendFactory) -> None:
        a = backend_factory()
        a.set_state(b"kept")
        b = backend_factory()
        state = b.get_state()
        assert state is not None and state[0] == b"kept", (
            "an invalid token must not change the state"
        )

    def test_empty_state_then_update(self, backend: RendezvousBackend) -> None:
        """The token of an empty state must work for the next update (torch's does not)."""
        first = backend.set_state(b"")
        assert first is not None and first[0] == b"" and first[2], "an empty state must be storable"
        result = backend.set_state(b"next", first[1])
        assert result is not None and result[0] == b"next" and result[2], (
            "the token of an empty state must work for the next update"
        )

    def test_large_binary_state(self, backend_factory: BackendFactory) -> None:
        state = os.urandom(1024 * 1024)
        a, b = backend_factory(), backend_factory()
        result = a.set_state(state)
        assert result is not None and result[2], "set_state must store this state"
        got = b.get_state()
        assert got is not None and got[0] == state, "the state must round-trip byte for byte"

    def test_racing_writers_one_winner_per_token(self, backend_factory: BackendFactory) -> None:
        writers = [backend_factory() for _ in range(8)]
        seed = writers[0].set_state(b"round 0")
        assert seed is not None, "set_state must return (state, token, has_set)"
        for round_no in range(1, 6):
            results = self._race(writers, round_no)
            assert all(r is not None for r in results), (
                "every racing set_state must return a result"
            )
            winners = [i for i, r in enumerate(results) if r is not None and r[2]]
            assert len(winners) == 1, f"round {round_no}: winners {winners}"
            final = writers[0].get_state()
            assert final is not None, "the state must exist after the race"
            assert final[0] == f"round {round_no} by {winners[0]}".encode(), (
                "the stored state must be the one winner's"
            )
            assert all(r is not None and r[0] == final[0] for r in results), (
                "every racer must be told the winning state"
            )

    @staticmethod
    def _race(
        writers: list[RendezvousBackend], round_no: int
    ) -> list[tuple[bytes, object, bool] | None]:
        tokens = []
        for writer in writers:
            current = writer.get_state()
            assert current is not None, "get_state must return the state set before"
            tokens.append(current[1])
        start = threading.Barrier(len(writers))
        results: list[tuple[bytes, object, bool] | None] = [None] * len(writers)

        def write(i: int) -> None:
            start.wait()
            results[i] = writers[i].set_state(f"round {round_no} by {i}".encode(), tokens[i])

        threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def test_corrupt_state_raises_state_error(
        self, backend: RendezvousBackend, corrupt_state: Callable[[], None]
    ) -> None:
        corrupt_state()
        with pytest.raises(RendezvousStateError):
            backend.get_state()

    def test_c10d_layout(self, new_client: StoreFactory, run_id: str) -> None:
        """StoreBackend's byte layout is torch's c10d layout (key, sentinel, base64)."""
        store = new_client()
        backend = StoreBackend(store, run_id)
        assert backend.name == "c10d", "StoreBackend's name must be 'c10d'"
        assert store.get("torch.rendezvous." + run_id) == NULL_SENTINEL.encode(), (
            "the null sentinel must be stored where torch's c10d backend keeps it"
        )
        backend.set_state(b"dummy_state")
        assert store.get("torch.rendezvous." + run_id) == b64encode(b"dummy_state"), (
            "the state must be stored base64-encoded, as torch's c10d backend does"
        )
