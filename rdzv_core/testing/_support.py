"""Machinery shared by the suites: capability gating, client bookkeeping, the override guard."""

from __future__ import annotations

import inspect
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from ..capability import Capability
from ..events import RendezvousEvent
from ..hookspecs import hookimpl
from ..store import Store

F = TypeVar("F", bound=Callable[..., Any])

StoreFactory = Callable[[], Store]


def requires(*capabilities: Capability) -> Callable[[F], F]:
    """Mark a suite test as needing ``capabilities``; it is skipped, with a reason naming
    the missing one, for a store that does not declare it."""

    def mark(test: F) -> F:
        test._rdzv_requires = frozenset(capabilities)  # type: ignore[attr-defined]
        return test

    return mark


class SuiteBase:
    """Fixtures and guards every conformance class shares.

    Subclasses provide ``store_factory``: a fixture returning a callable that opens a NEW
    client of ONE shared store, empty at the start of each test.
    """

    @pytest.fixture
    def new_client(self, store_factory: StoreFactory) -> Iterator[StoreFactory]:
        """``store_factory`` whose clients are all closed when the test ends."""
        opened: list[Store] = []
        lock = threading.Lock()

        def open_client() -> Store:
            client = store_factory()
            with lock:
                opened.append(client)
            return client

        yield open_client
        for client in reversed(opened):
            client.close()

    @pytest.fixture
    def store(self, new_client: StoreFactory) -> Store:
        """The first client of the store under test."""
        return new_client()

    @pytest.fixture(autouse=True)
    def _capability_gate(self, request: pytest.FixtureRequest) -> None:
        needed: frozenset[Capability] = getattr(request.function, "_rdzv_requires", frozenset())
        if not needed:
            return
        store: Store = request.getfixturevalue("store")
        for capability in sorted(needed):
            if capability not in store.capabilities:
                pytest.skip(
                    f"store {type(store).__name__} does not declare capability '{capability}'"
                )

    def test_no_overrides_DO_NOT_OVERRIDE(self) -> None:
        """A subclass may not delete or override a suite test, except with
        ``@pytest.mark.xfail(reason=...)`` so that the gap stays visible.

        Troubleshooting: instead of editing a suite test, mark your override as xfail
        with a reason, or fix the store so the suite test passes.
        """
        cls = type(self)
        offenders = []
        for suite in _suite_classes(cls):
            for name, original in vars(suite).items():
                if not name.startswith("test_") or not callable(original):
                    continue
                current = getattr(cls, name, None)
                if current is original:
                    continue
                if current is None or not callable(current):
                    offenders.append(f"{name} (deleted)")
                elif not _has_xfail_reason(current):
                    offenders.append(f"{name} (overridden without xfail(reason=...))")
        assert not offenders, (
            "Suite tests weakened in " + cls.__name__ + ": " + ", ".join(offenders)
        )


def _suite_classes(cls: type) -> list[type]:
    return [
        base
        for base in inspect.getmro(cls)
        if base is not cls and base.__module__.startswith("rdzv_core.testing")
    ]


def _has_xfail_reason(test: Any) -> bool:
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "xfail" and mark.kwargs.get("reason"):
            return True
    return False


def fork_context() -> Any:
    """The multiprocessing context for the cross-process tests.

    Fork, so a child can call the test's ``store_factory`` closure; the child only opens a
    new client and talks to the store through it.
    """
    return multiprocessing.get_context("fork")


class EventRecorder:
    """A plugin that records every event; ``register()`` it, act, then read ``events``."""

    def __init__(self) -> None:
        self.events: list[RendezvousEvent] = []

    @hookimpl
    def rdzv_event(self, event: RendezvousEvent) -> None:
        self.events.append(event)
