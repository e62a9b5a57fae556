"""StoreTypeConformance: the ``create_backend`` rules a registered store type must honour.

Opt in with a subclass naming the store type and two fixtures::

    class TestMyType(StoreTypeConformance):
        store_type = "mine"

        @pytest.fixture
        def endpoint(self, tmp_path) -> str: ...        # where a fresh store can be opened

        @pytest.fixture
        def unreachable(self) -> dict[str, str]: ...    # config (endpoint included) that
                                                        # cannot be opened or reached

``extra_config`` (a dict, empty by default) is added to every RendezvousParameters.
"""

from __future__ import annotations

import time
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from ..backend import StoreBackend
from ..errors import CONNECTION_FAILED, RendezvousConnectionError
from ..events import EventKind
from ..params import RendezvousParameters
from ..registry import create_backend, register, store_types, unregister
from ..store import Store
from ._support import EventRecorder, SuiteBase

__all__ = ["StoreTypeConformance"]


class StoreTypeConformance(SuiteBase):
    """``create_backend`` behaviour for one store type (the root README's "A backend in ten
    lines" and ``rdzv_core.create_backend``'s docstring)."""

    store_type: ClassVar[str]

    @pytest.fixture
    def extra_config(self) -> dict[str, str]:
        return {}

    @pytest.fixture
    def make_params(
        self, endpoint: str, extra_config: dict[str, str]
    ) -> Callable[..., RendezvousParameters]:
        def make(**overrides: Any) -> RendezvousParameters:
            config: dict[str, Any] = {"store_type": self.store_type, **extra_config}
            config.update(overrides)
            where = config.pop("endpoint", endpoint)
            run_id = config.pop("run_id", f"run-{uuid.uuid4().hex[:8]}")
            return RendezvousParameters("c10d", where, run_id, 1, 1, **config)

        return make

    @pytest.fixture
    def opened(self) -> Iterator[list[Store]]:
        stores: list[Store] = []
        yield stores
        for store in reversed(stores):
            store.close()

    @pytest.fixture
    def open_backend(
        self, make_params: Callable[..., RendezvousParameters], opened: list[Store]
    ) -> Callable[..., tuple[StoreBackend, Store]]:
        def open_(**overrides: Any) -> tuple[StoreBackend, Store]:
            backend, store = create_backend(make_params(**overrides))
            opened.append(store)
            return backend, store

        return open_

    def test_store_type_is_registered(self) -> None:
        found = store_types()
        assert self.store_type in found, "the store type must be listed by store_types()"
        described = found[self.store_type]
        assert described.name == self.store_type, "StoreType.name must equal the entry point's name"
        assert described.description and "\n" not in described.description, (
            "the description must be one non-empty line"
        )
        assert described.default_read_timeout > 0, "default_read_timeout must be positive"

    def test_create_backend_returns_c10d_backend_and_store(
        self, open_backend: Callable[..., tuple[StoreBackend, Store]]
    ) -> None:
        backend, store = open_backend()
        assert isinstance(backend, StoreBackend) and backend.name == "c10d", (
            "create_backend must return a c10d StoreBackend"
        )
        assert isinstance(store, Store), "create_backend must return the Store it opened"

    def test_store_type_is_stripped_and_case_folded(
        self, open_backend: Callable[..., tuple[StoreBackend, Store]]
    ) -> None:
        backend, _ = open_backend(store_type=f"  {self.store_type.upper()} ")
        assert backend.name == "c10d", "create_backend must return a c10d StoreBackend"

    def test_state_layout_is_c10d(
        self, make_params: Callable[..., RendezvousParameters], opened: list[Store]
    ) -> None:
        params = make_params()
        backend, store = create_backend(params)
        opened.append(store)
        backend.set_state(b"dummy_state")
        assert store.get("torch.rendezvous." + params.run_id) == b64encode(b"dummy_state"), (
            "the state must be stored base64-encoded under torch.rendezvous.<run_id>"
        )

    def test_default_read_timeout(
        self, open_backend: Callable[..., tuple[StoreBackend, Store]]
    ) -> None:
        _, store = open_backend()
        default = store_types()[self.store_type].default_read_timeout
        assert store.timeout == timedelta(seconds=default), (
            "without read_timeout the store must use the declared default_read_timeout"
        )

    def test_read_timeout_option(
        self, open_backend: Callable[..., tuple[StoreBackend, Store]]
    ) -> None:
        _, store = open_backend(read_timeout="7")
        assert store.timeout == timedelta(seconds=7), (
            "read_timeout=7 must give the store a 7 s timeout"
        )

    @pytest.mark.parametrize("value", ["0", "-1", 0])
    def test_non_positive_read_timeout_is_rejected(
        self, make_params: Callable[..., RendezvousParameters], value: object
    ) -> None:
        with pytest.raises(ValueError) as info:
            create_backend(make_params(read_timeout=value))
        assert str(info.value) == "The read timeout must be a positive integer.", (
            "a bad read_timeout must get torch's exact message"
        )

    def test_non_integer_read_timeout_is_rejected(
        self, make_params: Callable[..., RendezvousParameters]
    ) -> None:
        with pytest.raises(ValueError) as info:
            create_backend(make_params(read_timeout="1.5"))
        assert "'read_timeout'" in str(info.value), (
            "a non-integer read_timeout must name the option"
        )

    def test_unreachable_store_raises_connection_error(
        self, make_params: Callable[..., RendezvousParameters], unreachable: dict[str, str]
    ) -> None:
        start = time.monotonic()
        with pytest.raises(RendezvousConnectionError) as info:
            create_backend(make_params(**unreachable))
        assert str(info.value) == CONNECTION_FAILED, (
            "an unreachable store must raise RendezvousConnectionError with torch's message"
        )
        assert info.value.__cause__ is not None, (
            "the connection error must chain the store's own error as its cause"
        )
        assert time.monotonic() - start < 30, "an unreachable store must fail within 30 s"

    def test_two_backends_share_state(
        self,
        open_backend: Callable[..., tuple[StoreBackend, Store]],
        make_params: Callable[..., RendezvousParameters],
        opened: list[Store],
    ) -> None:
        params = make_params()
        first, store = create_backend(params)
        opened.append(store)
        written = first.set_state(b"shared")
        assert written is not None, "set_state must return (state, token, has_set)"
        second, other = create_backend(params)
        opened.append(other)
        assert second.get_state() == (b"shared", written[1]), (
            "two backends from create_backend must share one state"
        )

    def test_capabilities_match_the_declaration(
        self, open_backend: Callable[..., tuple[StoreBackend, Store]]
    ) -> None:
        """A store has its store type's capabilities, or fewer for its configuration."""
        _, store = open_backend()
        declared = store_types()[self.store_type].capabilities
        assert store.capabilities <= declared, (
            f"the store claims {sorted(map(str, store.capabilities - declared))}, which "
            "StoreType(capabilities=...) does not declare"
        )

    def test_events_are_emitted(
        self,
        make_params: Callable[..., RendezvousParameters],
        opened: list[Store],
        unreachable: dict[str, str],
    ) -> None:
        recorder = EventRecorder()
        register(recorder)
        try:
            with pytest.raises(RendezvousConnectionError):
                create_backend(make_params(**unreachable))
            _, store = create_backend(make_params())
            opened.append(store)
        finally:
            unregister(recorder)
        kinds = [(e.kind, e.store_type) for e in recorder.events]
        assert (EventKind.STORE_CREATED, self.store_type) in kinds, (
            "creating a store must emit store_created"
        )
        failures = [e for e in recorder.events if e.kind is EventKind.FAILURE]
        assert failures and isinstance(failures[-1].error, RendezvousConnectionError), (
            "a failed create must emit a failure event with the error"
        )
