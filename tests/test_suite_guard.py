"""The conformance suite guards itself against quietly weakened subclasses."""

from __future__ import annotations

import re

import pytest

from rdzv_core import Capability
from rdzv_core.store import Store
from rdzv_core.testing import MemoryStore, StoreConformance, requires


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
