"""Discovery, isolation, conflicts and dispatch, with real dist-info layouts on sys.path."""

from __future__ import annotations

import sys
import textwrap
from datetime import timedelta

import pytest

import rdzv_core
from rdzv_core import (
    EventKind,
    PluginConflictError,
    PluginLoadError,
    RendezvousConnectionError,
    RendezvousEvent,
    RendezvousParameters,
    StoreBackend,
    StoreType,
    hookimpl,
)
from rdzv_core.testing import EventRecorder, MemoryStore

from .conftest import InstallDist

GOOD = """
    from datetime import timedelta
    from rdzv_core import StoreType, hookimpl, parse_read_timeout
    from rdzv_core.testing import MemoryStore

    SHARED = {}

    def create_store(params):
        timeout = parse_read_timeout(params, 42)
        if params.endpoint == "unreachable":
            raise ConnectionRefusedError("nobody there")
        first = SHARED.setdefault(params.endpoint, MemoryStore())
        client = first.client()
        client.timeout = timedelta(seconds=timeout)
        return client

    @hookimpl
    def rdzv_store_type():
        return StoreType(
            "NAME", "An in-memory store for tests.", create_store, 42, MemoryStore.capabilities
        )
"""


def good(name: str) -> str:
    return GOOD.replace("NAME", name)


def params(
    store_type: object = "mem", endpoint: str = "e", **config: object
) -> RendezvousParameters:
    return RendezvousParameters("c10d", endpoint, "run", 1, 1, store_type=store_type, **config)


def test_names_listed_without_importing(install_dist: InstallDist) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    install_dist("rdzv-other", "2.0", {"other": "rdzv_other"}, {"rdzv_other": good("other")})
    backend, store = rdzv_core.create_backend(params())
    assert isinstance(backend, StoreBackend)
    assert store.timeout == timedelta(seconds=42)
    assert "rdzv_mem" in sys.modules
    assert "rdzv_other" not in sys.modules, "an unrelated plugin was imported"


def test_store_type_parsing_and_default(install_dist: InstallDist) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    _, store = rdzv_core.create_backend(params(" MEM "))
    assert isinstance(store, MemoryStore)
    with pytest.raises(ValueError) as info:
        rdzv_core.create_backend(RendezvousParameters("c10d", "e", "run", 1, 1))
    assert str(info.value) == "Invalid store type given. Currently only supports mem."
    with pytest.raises(TypeError, match="store_type"):
        rdzv_core.create_backend(params(5))


def test_read_timeout_validated_before_the_store_opens(install_dist: InstallDist) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    with pytest.raises(ValueError, match="^The read timeout must be a positive integer.$"):
        rdzv_core.create_backend(params(read_timeout="0"))
    _, store = rdzv_core.create_backend(params(read_timeout="3"))
    assert store.timeout == timedelta(seconds=3)


def test_unreachable_store_is_connection_error(install_dist: InstallDist) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    with pytest.raises(RendezvousConnectionError) as info:
        rdzv_core.create_backend(params(endpoint="unreachable"))
    assert str(info.value) == (
        "The connection to the C10d store has failed. See inner exception for details."
    )
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_unknown_store_type_message_and_notes(
    install_dist: InstallDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist("rdzv-plugin-etcd", "0.1", {"etcd": "fake_etcd"}, {"fake_etcd": good("etcd")})
    install_dist("rdzv-plugin-file", "0.1", {"file": "fake_file"}, {"fake_file": good("file")})
    install_dist("rdzv-plugin-tcp", "0.1", {"tcp": "fake_tcp"}, {"fake_tcp": good("tcp")})
    monkeypatch.setenv("RDZV_PLUGINS", "file,tcp")  # etcd is installed, and left out
    rdzv_core.refresh()
    with pytest.raises(ValueError) as info:
        rdzv_core.create_backend(params("tpc"))
    assert str(info.value) == "Invalid store type given. Currently only supports file and tcp."
    assert "Did you mean 'tcp'?" in info.value.__notes__
    with pytest.raises(ValueError) as info:
        rdzv_core.create_backend(params("etcd"))
    assert str(info.value) == "Invalid store type given. Currently only supports file and tcp."
    # (The pip hint for a store type that is not installed: tools/check_dist.py's fresh venv.)
    assert info.value.__notes__ == [
        "Store type 'etcd' is installed but not in RDZV_PLUGINS=file,tcp."
    ]


def test_three_names_are_joined_like_a_sentence(install_dist: InstallDist) -> None:
    for name in ("c", "a", "b"):
        install_dist(f"d-{name}", "1", {name: f"m_{name}"}, {f"m_{name}": good(name)})
    with pytest.raises(ValueError) as info:
        rdzv_core.create_store(params("zzz"))
    assert str(info.value) == "Invalid store type given. Currently only supports a, b and c."


def test_broken_plugin_is_isolated_and_reported(install_dist: InstallDist) -> None:
    install_dist(
        "rdzv-broken",
        "3.1",
        {"broken": "rdzv_broken"},
        {"rdzv_broken": "import no_such_module_anywhere\n"},
    )
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    assert set(rdzv_core.store_types()) == {"mem"}
    rdzv_core.create_backend(params())
    with pytest.raises(PluginLoadError) as info:
        rdzv_core.create_backend(params("broken"))
    message = str(info.value)
    assert "'broken'" in message and "rdzv-broken 3.1" in message
    assert "no_such_module_anywhere" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    report = {p.name: p for p in rdzv_core.plugins()}
    assert report["broken"].status == "broken"
    assert report["broken"].distribution == "rdzv-broken" and report["broken"].version == "3.1"
    assert "no_such_module_anywhere" in (report["broken"].error or "")
    assert report["mem"].status == "ok"


def test_plugin_providing_another_name_is_broken(install_dist: InstallDist) -> None:
    install_dist("rdzv-liar", "1.0", {"liar": "rdzv_liar"}, {"rdzv_liar": good("truth")})
    with pytest.raises(PluginLoadError, match="its StoreType is named 'truth': they must match"):
        rdzv_core.create_store(params("liar"))


def test_plugin_with_misspelled_hook_is_broken(install_dist: InstallDist) -> None:
    source = textwrap.dedent(good("typo")) + "\n@hookimpl\ndef rdzv_stor_type():\n    pass\n"
    install_dist("rdzv-typo", "1.0", {"typo": "rdzv_typo"}, {"rdzv_typo": source})
    with pytest.raises(PluginLoadError, match="rdzv_stor_type"):
        rdzv_core.create_store(params("typo"))


def test_duplicate_name_is_a_conflict_naming_both(install_dist: InstallDist) -> None:
    install_dist("rdzv-one", "1.0", {"dup": "rdzv_one"}, {"rdzv_one": good("dup")})
    install_dist("rdzv-two", "2.0", {"dup": "rdzv_two"}, {"rdzv_two": good("dup")})
    with pytest.raises(PluginConflictError) as info:
        rdzv_core.create_store(params("dup"))
    assert "rdzv-one 1.0" in str(info.value) and "rdzv-two 2.0" in str(info.value)
    assert "rdzv_one" not in sys.modules and "rdzv_two" not in sys.modules
    (entry,) = rdzv_core.plugins()
    assert entry.status == "conflict" and "rdzv-two 2.0" in (entry.error or "")


def test_allowlist_and_disable(install_dist: InstallDist, monkeypatch: pytest.MonkeyPatch) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    install_dist("rdzv-other", "1.0", {"other": "rdzv_other"}, {"rdzv_other": good("other")})
    monkeypatch.setenv("RDZV_PLUGINS", "other")
    rdzv_core.refresh()
    assert set(rdzv_core.store_types()) == {"other"}
    with pytest.raises(ValueError) as info:
        rdzv_core.create_store(params("mem"))
    assert any("RDZV_PLUGINS" in n for n in info.value.__notes__)
    monkeypatch.setenv("RDZV_DISABLE_PLUGIN_AUTOLOAD", "1")
    rdzv_core.refresh()
    assert rdzv_core.store_types() == {}
    with pytest.raises(ValueError) as info:
        rdzv_core.create_store(params("other"))
    assert str(info.value) == "Invalid store type given. No installed store type is enabled."


class InProcess:
    def __init__(self, name: str) -> None:
        self.store = MemoryStore()
        self.name = name

    def open(self, params: RendezvousParameters) -> MemoryStore:
        client = self.store.client()
        client.timeout = timedelta(seconds=rdzv_core.parse_read_timeout(params, 5))
        return client

    @hookimpl
    def rdzv_store_type(self) -> StoreType:
        return StoreType(self.name, "In-process.", self.open, 5, MemoryStore.capabilities)


def test_register_unregister_and_conflicts(install_dist: InstallDist) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    plugin = InProcess("inproc")
    assert rdzv_core.register(plugin) is not None
    try:
        _, store = rdzv_core.create_backend(params("inproc"))
        assert store.timeout == timedelta(seconds=5)
        with pytest.raises(PluginConflictError, match="rdzv-mem 1.0"):
            rdzv_core.register(InProcess("mem"))
        with pytest.raises(PluginConflictError, match="in-process"):
            rdzv_core.register(InProcess("inproc"))
        rdzv_core.refresh()
        assert "inproc" in rdzv_core.store_types(), "refresh dropped an in-process plugin"
        report = {p.name: p for p in rdzv_core.plugins()}
        assert report["inproc"].distribution == "<in-process>"
    finally:
        rdzv_core.unregister(plugin)
    assert "inproc" not in rdzv_core.store_types()


def test_refresh_sees_new_installs(install_dist: InstallDist) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    assert set(rdzv_core.store_types()) == {"mem"}
    install_dist("rdzv-late", "1.0", {"late": "rdzv_late"}, {"rdzv_late": good("late")})
    assert set(rdzv_core.store_types()) == {"mem", "late"}


class Exploding:
    @hookimpl
    def rdzv_event(self, event: RendezvousEvent) -> None:
        raise RuntimeError("observer bug")


def test_events_reach_observers_and_observer_errors_are_contained(
    install_dist: InstallDist,
) -> None:
    install_dist("rdzv-mem", "1.0", {"mem": "rdzv_mem"}, {"rdzv_mem": good("mem")})
    recorder, exploding = EventRecorder(), Exploding()
    rdzv_core.register(exploding)
    rdzv_core.register(recorder)
    try:
        rdzv_core.create_backend(params())
        with pytest.raises(RendezvousConnectionError):
            rdzv_core.create_backend(params(endpoint="unreachable"))
        with pytest.raises(ValueError):
            rdzv_core.create_backend(params("nope"))
    finally:
        rdzv_core.unregister(recorder)
        rdzv_core.unregister(exploding)
    kinds = [(e.kind, e.store_type) for e in recorder.events]
    assert kinds == [
        (EventKind.STORE_CREATED, "mem"),
        (EventKind.FAILURE, "mem"),
        (EventKind.FAILURE, "nope"),
    ]
    assert isinstance(recorder.events[1].error, RendezvousConnectionError)


def test_empty_run_id_fails_before_any_store_is_created() -> None:
    with pytest.raises(ValueError, match="run id"):
        RendezvousParameters("c10d", "e", "", 1, 1, store_type="mem")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "Bad"}, "lower-case"),
        ({"name": ""}, "non-empty"),
        ({"description": "two\nlines"}, "one line"),
        ({"default_read_timeout": 0}, "positive"),
    ],
)
def test_store_type_validation(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        "name": "ok",
        "description": "d",
        "create_store": lambda p: MemoryStore(),
        "default_read_timeout": 1,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match):
        StoreType(**fields)  # type: ignore[arg-type]
