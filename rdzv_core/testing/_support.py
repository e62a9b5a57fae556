"""Machinery shared by the suites: capability gating, client bookkeeping, the override guard."""

from __future__ import annotations

import inspect
import multiprocessing
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import pytest

from ..capability import Capability
from ..events import RendezvousEvent
from ..hookspecs import hookimpl
from ..store import Store

F = TypeVar("F", bound=Callable[..., Any])

StoreFactory = Callable[[], Store]
#: How a suite test skipped for want of a capability starts its reason (the summary at the
#: end of a pytest run counts these).
SKIP_PREFIX = "rdzv suite: needs capability "
#: How a cross-process test left untested for want of a picklable factory starts its reason.
UNPICKLABLE_PREFIX = "rdzv suite: left untested: the store factory is not picklable "
UNPICKLABLE_FIX = (
    "- the cross-process tests open clients in other processes: return "
    "functools.partial(MyStore, ...) from store_factory instead of a lambda or a closure, "
    "or override the process_store_factory fixture"
)


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

    #: The registered store type whose ``StoreType.capabilities`` decide which tests run.
    #: Without it, the capabilities come from the store object (``Store.capabilities``).
    store_type: ClassVar[str | None] = None

    @pytest.fixture
    def process_store_factory(self, store_factory: StoreFactory) -> StoreFactory:
        """What the other processes call to open their own client: ``store_factory`` by
        default, which must then be picklable (``functools.partial(MyStore, path)``, not
        a lambda or a closure). A factory that is not picklable (suite 1 allowed one)
        leaves the cross-process tests untested: each is skipped with a reason that says
        how to fix it, and the summary at the end of the run lists them."""
        try:
            pickle.dumps(store_factory)
        except Exception as e:
            pytest.skip(f"{UNPICKLABLE_PREFIX}({type(e).__name__}: {e}) {UNPICKLABLE_FIX}")
        return store_factory

    def declared_capabilities(self, store: Store) -> frozenset[Capability]:
        """The capabilities the suite tests: those a store sets for its configuration
        (an instance attribute), else its store type's, else its class's."""
        if self.store_type is None:
            return frozenset(store.capabilities)
        from ..registry import default_registry

        try:
            return default_registry().get(self.store_type).capabilities_of(store)
        except TypeError as e:
            pytest.fail(str(e))

    @pytest.fixture(autouse=True)
    def _capability_gate(self, request: pytest.FixtureRequest) -> None:
        needed: frozenset[Capability] = getattr(request.function, "_rdzv_requires", frozenset())
        if not needed:
            return
        store: Store = request.getfixturevalue("store")
        declared = self.declared_capabilities(store)
        for capability in sorted(needed):
            if capability not in declared:
                owner = self.store_type or type(store).__name__
                pytest.skip(f"{SKIP_PREFIX}'{capability}' (not declared by {owner})")

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


def process_context() -> multiprocessing.context.ForkServerContext:
    """How the suites start processes: forked from multiprocessing's fork server, a process
    of its own (never the test process, whose threads a fork would copy mid-flight) that
    has imported rdzv-core and nothing else. Each process then imports the store's module
    itself, as a spawned one does, without the interpreter start-up and rdzv-core's imports
    a spawned one pays for."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def run_in_processes(
    factory: StoreFactory, work: Callable[[Store, int], Any], count: int
) -> list[Any]:
    """``work(a new client, index)`` in ``count`` new processes (see
    :func:`process_context`); their results, in order. ``factory`` and ``work`` must be
    picklable."""
    ctx = process_context()
    with ctx.Pool(count) as pool:
        pending = [pool.apply_async(_open_and_run, (factory, work, i)) for i in range(count)]
        return [result.get(timeout=120) for result in pending]


def _open_and_run(factory: StoreFactory, work: Callable[[Store, int], Any], index: int) -> Any:
    client = factory()
    try:
        return work(client, index)
    finally:
        client.close()


class EventRecorder:
    """A plugin that records every event; ``register()`` it, act, then read ``events``."""

    def __init__(self) -> None:
        self.events: list[RendezvousEvent] = []

    @hookimpl
    def rdzv_event(self, event: RendezvousEvent) -> None:
        self.events.append(event)
