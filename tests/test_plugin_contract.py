"""The plugin contract as a store author meets it: one declaration per fact, the resolved
read timeout, unknown options, failures, capabilities and the suite's import guard."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

import rdzv_core
from rdzv_core import (
    Capability,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousParameters,
    Store,
    StoreType,
    UnknownOptionWarning,
    hookimpl,
)
from rdzv_core.storekit import add_to_value, compare_set_outcome, read_timeout, wrap_int64
from rdzv_core.testing import MemoryStore


class Plugin:
    """An in-process plugin whose create_store runs ``opener(params)``."""

    def __init__(self, opener: Callable[[RendezvousParameters], Store], **declared: Any) -> None:
        self.opener = opener
        self.declared = declared
        self.seen: list[RendezvousParameters] = []

    def open(self, params: RendezvousParameters) -> Store:
        self.seen.append(params)
        return self.opener(params)

    @hookimpl
    def rdzv_store_type(self) -> StoreType:
        options = {"default_read_timeout": 42, "capabilities": MemoryStore.capabilities}
        return StoreType("kit", "For contract tests.", self.open, **{**options, **self.declared})


@pytest.fixture
def plugin_of() -> Iterator[Callable[..., Plugin]]:
    made: list[Plugin] = []

    def make(opener: Callable[[RendezvousParameters], Store] | None = None, **kw: Any) -> Plugin:
        plugin = Plugin(opener or (lambda params: MemoryStore()), **kw)
        rdzv_core.register(plugin)
        made.append(plugin)
        return plugin

    yield make
    for plugin in made:
        rdzv_core.unregister(plugin)


def params(**config: Any) -> RendezvousParameters:
    return RendezvousParameters("c10d", "somewhere", "run", 1, 1, store_type="kit", **config)


def test_the_resolved_read_timeout_reaches_the_plugin(plugin_of: Callable[..., Plugin]) -> None:
    plugin = plugin_of()
    rdzv_core.create_store(params())
    rdzv_core.create_store(params(read_timeout="7"))
    assert [read_timeout(p) for p in plugin.seen] == [timedelta(seconds=42), timedelta(seconds=7)]
    with pytest.raises(ValueError, match="positive integer"):
        read_timeout(params())  # not resolved: called outside the registry


def test_unknown_options_warn_with_the_closest_known_one(plugin_of: Callable[..., Plugin]) -> None:
    plugin_of(options={"colour": "the colour of the store"})
    with pytest.warns(UnknownOptionWarning, match="'read_timout'.*did you mean 'read_timeout'"):
        rdzv_core.create_store(params(read_timout="5"))
    with pytest.warns(UnknownOptionWarning, match="did you mean 'colour'"):
        rdzv_core.create_store(params(color="red"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The store type's own options, the rendezvous', and the keys torchrun adds itself.
        rdzv_core.create_store(
            params(colour="red", join_timeout="5", is_host="false", timeout="900", rank="0")
        )


def test_plugin_failures_become_connection_errors_with_the_cause(
    plugin_of: Callable[..., Plugin],
) -> None:
    def raises(error: Exception) -> Callable[[RendezvousParameters], Store]:
        def open_(params: RendezvousParameters) -> Store:
            raise error

        return open_

    plugin = plugin_of(raises(sqlite3.OperationalError("database is locked")))
    with pytest.raises(RendezvousConnectionError) as info:
        rdzv_core.create_store(params())
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    rdzv_core.unregister(plugin)
    plugin = plugin_of(raises(ValueError("bad endpoint")))
    with pytest.raises(ValueError, match="bad endpoint"):
        rdzv_core.create_store(params())
    rdzv_core.unregister(plugin)
    plugin_of(raises(RendezvousError("exactly this")))
    with pytest.raises(RendezvousError, match="exactly this") as error:
        rdzv_core.create_store(params())
    assert type(error.value) is RendezvousError


class Undeclared(MemoryStore):
    capabilities = frozenset()


class Disagreeing(MemoryStore):
    capabilities = frozenset({Capability.CROSS_HOST})


def test_capabilities_are_declared_once_on_the_store_type(
    plugin_of: Callable[..., Plugin],
) -> None:
    declared = frozenset({Capability.DELETE, Capability.PERSISTENT})
    plugin = plugin_of(lambda p: Undeclared(), capabilities=declared)
    assert rdzv_core.create_store(params()).capabilities == declared, "the registry gives them"
    rdzv_core.unregister(plugin)
    plugin = plugin_of(lambda p: Disagreeing(), capabilities=declared)
    with pytest.raises(TypeError, match=r"Declare them once, in StoreType\(capabilities=...\)"):
        rdzv_core.create_store(params())
    rdzv_core.unregister(plugin)

    def configured(p: RendezvousParameters) -> Store:
        store = Undeclared()
        store.capabilities = frozenset({Capability.DELETE})  # type: ignore[misc]
        return store

    plugin = plugin_of(configured, capabilities=declared)
    assert rdzv_core.create_store(params()).capabilities == {Capability.DELETE}
    rdzv_core.unregister(plugin)

    def overclaiming(p: RendezvousParameters) -> Store:
        store = Undeclared()
        store.capabilities = frozenset({Capability.LEASES})  # type: ignore[misc]
        return store

    plugin_of(overclaiming, capabilities=declared)
    with pytest.raises(TypeError, match="'leases'.*does not declare"):
        rdzv_core.create_store(params())


def test_the_plugin_report_lists_options(plugin_of: Callable[..., Plugin]) -> None:
    plugin_of(options={"colour": "the colour of the store"})
    (info,) = [p for p in rdzv_core.plugins() if p.name == "kit"]
    assert info.options == {"colour": "the colour of the store"}
    assert info.to_dict()["options"] == {"colour": "the colour of the store"}


def test_bad_option_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="lower-case name"):
        StoreType("x", "x", lambda p: MemoryStore(), options={"Colour": "x"})


def test_storekit_helpers() -> None:
    assert compare_set_outcome(None, b"", b"d") == (b"d", b"d")
    assert compare_set_outcome(None, b"e", b"d") == (None, b"e")
    assert compare_set_outcome(b"e", b"e", b"d") == (b"d", b"d")
    assert compare_set_outcome(b"c", b"e", b"d") == (None, b"c")
    assert wrap_int64(2**63) == -(2**63) and wrap_int64(-(2**63) - 1) == 2**63 - 1
    assert add_to_value("n", None, 5) == 5 and add_to_value("n", b" -7 ", 2) == -5
    assert add_to_value("n", b"9223372036854775807", 1) == -(2**63)
    assert add_to_value("n", b"-9223372036854775808", -1) == 2**63 - 1


def test_add_to_value_names_the_key_given_as_text_or_as_utf8_bytes() -> None:
    for key in ("cl\u00e9", "cl\u00e9".encode()):
        with pytest.raises(ValueError) as caught:
            add_to_value(key, b"word", 1)
        assert str(caught.value) == (
            "Cannot add to key 'cl\u00e9': its value b'word' is not a decimal integer."
        )


def test_the_suite_without_pytest_says_how_to_get_it() -> None:
    code = "import sys; sys.modules['pytest'] = None; import rdzv_core.testing"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "pip install 'rdzv-core[testing]'" in result.stderr


def test_host_or_join_follows_the_is_host_rules() -> None:
    from rdzv_core.storekit import host_or_join

    calls: list[bool] = []

    def busy_port(hosting: bool) -> str:
        calls.append(hosting)
        if hosting:
            raise OSError("address in use")
        return "client"

    def p(**config: str) -> RendezvousParameters:
        return RendezvousParameters("c10d", "127.0.0.1:1", "run", 1, 1, **config)

    assert host_or_join(p(), "127.0.0.1", busy_port, (OSError,)) == "client"
    assert calls == [True, False], "an inferred host falls back to a client"
    with pytest.raises(OSError):
        host_or_join(p(is_host="true"), "127.0.0.1", busy_port, (OSError,))
    calls.clear()
    assert host_or_join(p(is_host="false"), "127.0.0.1", busy_port, (OSError,)) == "client"
    assert host_or_join(p(), "192.0.2.1", busy_port, (OSError,)) == "client"
    assert calls == [False, False], "a remote endpoint or is_host=false never hosts"
