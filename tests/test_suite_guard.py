"""The conformance suite guards itself against quietly weakened subclasses."""

from __future__ import annotations

import os
import re

import pytest

from rdzv_core import Capability
from rdzv_core.store import Store
from rdzv_core.testing import MemoryStore, StoreConformance, requires
from rdzv_core.testing._support import process_context


class Honest(StoreConformance):
    pass


class Overrides(StoreConformance):
    def test_check(self, store: Store) -> None:  # type: ignore[override]
        pass


class Deletes(StoreConformance):
    test_many_keys = None  # type: ignore[assignment]


class MarksItsGap(StoreConformance):
    @pytest.mark.xfail(reason="this store cannot count keys")
    def test_num_keys_counts_every_key(self, store: Store) -> None:  # type: ignore[override]
        raise NotImplementedError


def test_unchanged_subclass_passes_the_guard() -> None:
    Honest().test_no_overrides_DO_NOT_OVERRIDE()
    MarksItsGap().test_no_overrides_DO_NOT_OVERRIDE()


@pytest.mark.parametrize(
    ("cls", "fragment"),
    [(Overrides, "test_check (overridden"), (Deletes, "test_many_keys (deleted)")],
)
def test_weakened_subclass_fails_the_guard(cls: type, fragment: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(fragment)):
        cls().test_no_overrides_DO_NOT_OVERRIDE()


def test_requires_marks_the_capability() -> None:
    @requires(Capability.LEASES)
    def needs_leases() -> None: ...

    assert needs_leases._rdzv_requires == frozenset({Capability.LEASES})  # type: ignore[attr-defined]
    assert Capability.LEASES not in MemoryStore.capabilities


def test_cross_process_tests_run_in_processes_that_import_the_store_themselves() -> None:
    """The suite's processes come from a fork server, not from the test process, and have
    not imported the store's module before they unpickle its factory (as spawned ones)."""
    import rdzv_plugin_tcp  # noqa: F401  (imported by the test process)

    probe = "(__import__('os').getppid(), 'rdzv_plugin_tcp' in __import__('sys').modules)"
    with process_context().Pool(1) as pool:
        parent, imported = pool.apply(eval, (probe,))
    assert parent != os.getpid(), "a suite process was forked from the test process"
    assert not imported, "a suite process started with the store's module already imported"
