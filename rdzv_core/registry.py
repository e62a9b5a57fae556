"""Plugin discovery and dispatch: store types by name, loaded lazily and in isolation.

What each call imports:

- ``create_store`` / ``create_backend`` / ``create_handler``: only the plugin of the store
  type asked for (names come from package metadata, without importing anything).
- ``store_types()``, ``plugins()``, ``rdzv plugins`` and the ``rdzv`` command's parser:
  every allowed plugin module (cheap by contract: a plugin module imports no client,
  server or heavy library; ``StoreType.create_store`` does that, when called).

Plugins load in a guarded loop, so a broken plugin only breaks its own store type. Two
distributions declaring one name is a conflict reported with both; nothing silently wins.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from ._version import __version__
from .backend import StoreBackend
from .compat import requirement_problem
from .endpoint import parse_read_timeout
from .errors import (
    CONNECTION_FAILED,
    PluginConflictError,
    PluginLoadError,
    RendezvousConnectionError,
    RendezvousError,
    UnknownOptionWarning,
    add_note,
)
from .events import EventKind, RendezvousEvent
from .params import RendezvousParameters
from .store import Store
from .storetype import StoreType

__all__ = [
    "ENTRY_POINT_GROUP",
    "RANK_ORDER_GROUP",
    "PluginInfo",
    "Registry",
    "create_backend",
    "create_store",
    "default_registry",
    "plugins",
    "refresh",
    "register",
    "store_types",
    "unregister",
]

ENTRY_POINT_GROUP = "rdzv"
#: The entry-point group of rank orders (``rank_order=<name>``).
RANK_ORDER_GROUP = "rdzv.rank_orders"
#: First-party store types and the distribution that provides each, for install hints.
KNOWN_DISTRIBUTIONS = {
    "etcd": "rdzv-plugin-etcd",
    "file": "rdzv-plugin-file",
    "redis": "rdzv-plugin-redis",
    "tcp": "rdzv-plugin-tcp",
}

if TYPE_CHECKING:
    from .rendezvous.policy import Exclusion, RankOrderFactory, RankPolicy, RestartBudget

log = logging.getLogger(__name__)
#: The rank orders rdzv-core provides (plugins may not reuse their names).
BUILTIN_ORDERS = ("sorted", "sticky", "topology")


@dataclass(frozen=True)
class PluginInfo:
    """One line of the plugin report: a store type, where it comes from and its status.

    ``status`` is ``"ok"``, ``"broken"`` (``error`` says why) or ``"conflict"`` (``error``
    names every distribution that declares the name).
    """

    name: str
    distribution: str | None
    version: str | None
    status: str
    error: str | None = None
    description: str | None = None
    capabilities: tuple[str, ...] = ()
    default_read_timeout: int | None = None
    options: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "description": self.description,
            "capabilities": list(self.capabilities),
            "default_read_timeout": self.default_read_timeout,
            "options": dict(self.options),
        }


@dataclass(frozen=True)
class _Source:
    entry_point: EntryPoint
    distribution: str
    version: str

    def label(self) -> str:
        return f"{self.distribution} {self.version}"


def _source(ep: EntryPoint) -> _Source:
    dist = ep.dist
    if dist is None:
        return _Source(ep, "<unknown distribution>", "?")
    return _Source(ep, dist.name, dist.version)


def _requirements(source: _Source) -> list[str]:
    """The ``Requires-Dist`` lines of the plugin's distribution, read straight from its
    metadata headers (``Distribution.requires`` parses the whole file as an e-mail: a few
    milliseconds a plugin, at every start)."""
    dist = source.entry_point.dist
    if dist is None:
        return []
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    headers = text.split("\n\n", 1)[0]
    return [
        line.split(":", 1)[1].strip()
        for line in headers.splitlines()
        if line[:14].lower() == "requires-dist:"
    ]


def _autoload() -> bool:
    return os.environ.get("RDZV_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")


def _allowed(name: str) -> bool:
    """Whether ``RDZV_PLUGINS`` (names separated by ',', unset: all) lets ``name`` load."""
    allowed = os.environ.get("RDZV_PLUGINS")
    return allowed is None or name in {n.strip() for n in allowed.split(",")}


def _join_names(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


class Registry:
    """Store types from entry points (loaded on demand) and in-process plugins."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._sources: dict[str, list[_Source]] | None = None
        self._loaded: dict[str, StoreType] = {}
        self._origin: dict[str, _Source | None] = {}
        self._owner: dict[str, object] = {}
        self._broken: dict[str, PluginLoadError] = {}
        self._autoloaded: list[object] = []

    # -- discovery -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Forget every plugin loaded from entry points and re-read them on next use.

        In-process plugins added with :meth:`register` stay.
        """
        with self._lock:
            for plugin in self._autoloaded:
                self._forget(plugin)
            self._autoloaded.clear()
            self._broken.clear()
            self._sources = None

    def _scan(self) -> dict[str, list[_Source]]:
        if self._sources is not None:
            return self._sources
        sources: dict[str, list[_Source]] = {}
        if not _autoload():
            self._sources = sources
            return sources
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if not _allowed(ep.name):
                continue
            source = _source(ep)
            known = sources.setdefault(ep.name, [])
            if all(s.distribution != source.distribution for s in known):
                known.append(source)
        self._sources = sources
        return sources

    def _names(self) -> list[str]:
        return sorted(set(self._scan()) | set(self._loaded))

    # -- loading ---------------------------------------------------------------------------

    def get(self, name: str) -> StoreType:
        """The store type called ``name``, loading its plugin if needed.

        Raises ValueError for an unknown name (hints in the notes), PluginConflictError when
        two distributions declare it, PluginLoadError (cause chained) when its plugin is broken.
        """
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            sources = self._scan().get(name)
            if not sources:
                raise self._unknown(name)
            if len(sources) > 1:
                labels = " and ".join(s.label() for s in sources)
                raise PluginConflictError(
                    f"Store type '{name}' is declared by more than one distribution: {labels}. "
                    "Uninstall all but one of them."
                )
            if name not in self._broken:
                self._load(name, sources[0])
            if name in self._broken:
                error = self._broken[name]
                raise PluginLoadError(str(error)) from error.__cause__
            return self._loaded[name]

    def _load(self, name: str, source: _Source) -> None:
        where = f"store type '{name}' from {source.label()}"
        plugin: object = None
        problem = requirement_problem(
            source.distribution, source.version, _requirements(source), __version__
        )
        if problem is not None:
            self._record_broken(name, f"The plugin of {where} cannot run here: {problem}.", None)
            return
        try:
            plugin = source.entry_point.load()
            self._pm.register(plugin, name=f"{ENTRY_POINT_GROUP}:{name}")
        except Exception as e:
            self._record_broken(name, f"The plugin of {where} failed to load: {e!r}", e)
            return
        try:
            self._pm.check_pending()
            store_type = self._declared(plugin)
            if store_type is None:
                raise TypeError("it does not implement the hook rdzv_store_type")
            if store_type.name != name:
                raise ValueError(
                    f"its entry point is named '{name}' but its StoreType is named "
                    f"'{store_type.name}': they must match (the entry point's name is the "
                    "store type's name)"
                )
        except Exception as e:
            self._pm.unregister(plugin)
            self._record_broken(name, f"The plugin of {where} is invalid: {e}", e)
            return
        self._autoloaded.append(plugin)
        self._loaded[name] = store_type
        self._origin[name] = source
        self._owner[name] = plugin

    def _record_broken(self, name: str, message: str, cause: Exception | None) -> None:
        error = PluginLoadError(message)
        error.__cause__ = cause
        self._broken[name] = error
        log.warning("%s", message)

    def _declared(self, plugin: object) -> StoreType | None:
        for impl in self._pm.hook.rdzv_store_type.get_hookimpls():
            if impl.plugin is plugin:
                result = impl.function()
                if not isinstance(result, StoreType):
                    raise TypeError(
                        f"rdzv_store_type returned {type(result).__name__}, not a StoreType"
                    )
                return result
        return None

    def _load_all(self) -> None:
        for name in list(self._scan()):
            with contextlib.suppress(PluginLoadError, PluginConflictError):
                self.get(name)

    def _unknown(self, name: str) -> ValueError:
        names = self._names()
        if names:
            message = f"Invalid store type given. Currently only supports {_join_names(names)}."
        elif entry_points(group=ENTRY_POINT_GROUP):
            message = "Invalid store type given. No installed store type is enabled."
        else:
            message = "Invalid store type given. No store type is installed."
        error = ValueError(message)
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            add_note(error, f"Did you mean '{close[0]}'?")
        installed = bool(entry_points(group=ENTRY_POINT_GROUP, name=name))
        if name in KNOWN_DISTRIBUTIONS and not installed:
            dist = KNOWN_DISTRIBUTIONS[name]
            add_note(error, f"Store type '{name}' is provided by {dist}: pip install {dist}")
        if not _autoload():
            add_note(error, "Plugin autoloading is off (RDZV_DISABLE_PLUGIN_AUTOLOAD is set).")
        elif os.environ.get("RDZV_PLUGINS") is not None and installed:
            add_note(
                error,
                f"Store type '{name}' is installed but not in "
                f"RDZV_PLUGINS={os.environ['RDZV_PLUGINS']}.",
            )
        return error

    # -- in-process plugins ----------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> StoreType | None:
        """Add an in-process plugin; returns the store type it provides, if any.

        A store type name already provided by another plugin or distribution is a
        PluginConflictError, and nothing is registered.
        """
        with self._lock:
            self._pm.register(plugin, name=name)
            try:
                self._pm.check_pending()
                store_type = self._declared(plugin)
                if store_type is not None:
                    self._check_free(store_type.name)
            except Exception:
                self._pm.unregister(plugin)
                raise
            if store_type is not None:
                self._loaded[store_type.name] = store_type
                self._origin[store_type.name] = None
                self._owner[store_type.name] = plugin
            return store_type

    def _check_free(self, name: str) -> None:
        if name in self._loaded:
            source = self._origin.get(name)
            other = "another in-process plugin" if source is None else source.label()
            raise PluginConflictError(f"Store type '{name}' is already provided by {other}.")
        sources = self._scan().get(name)
        if sources:
            raise PluginConflictError(
                f"Store type '{name}' is already declared by {sources[0].label()}."
            )

    def unregister(self, plugin: object) -> None:
        """Remove a plugin added with :meth:`register` (or loaded from an entry point)."""
        with self._lock:
            self._forget(plugin)
            if plugin in self._autoloaded:
                self._autoloaded.remove(plugin)

    def _forget(self, plugin: object) -> None:
        if self._pm.is_registered(plugin):
            self._pm.unregister(plugin)
        for name in [n for n, owner in self._owner.items() if owner is plugin]:
            del self._owner[name], self._loaded[name], self._origin[name]

    # -- reports ---------------------------------------------------------------------------

    def store_types(self) -> dict[str, StoreType]:
        """Every usable store type by name (loads every allowed plugin)."""
        with self._lock:
            self._load_all()
            return {name: self._loaded[name] for name in sorted(self._loaded)}

    def plugins(self) -> list[PluginInfo]:
        """A report line per store type name: ok, broken or conflict (loads every plugin)."""
        with self._lock:
            self._load_all()
            report = []
            for name in self._names():
                report.append(self._info(name))
            return report

    def _info(self, name: str) -> PluginInfo:
        sources = (self._sources or {}).get(name, [])
        if len(sources) > 1:
            labels = " and ".join(s.label() for s in sources)
            return PluginInfo(
                name,
                sources[0].distribution,
                sources[0].version,
                "conflict",
                f"declared by {labels}",
            )
        if name in self._broken:
            error = self._broken[name]
            return PluginInfo(
                name,
                sources[0].distribution,
                sources[0].version,
                "broken",
                f"{error} (cause: {error.__cause__!r})" if error.__cause__ else str(error),
            )
        store_type = self._loaded[name]
        origin = self._origin.get(name)
        return PluginInfo(
            name,
            origin.distribution if origin else "<in-process>",
            origin.version if origin else None,
            "ok",
            description=store_type.description,
            capabilities=tuple(sorted(c.value for c in store_type.capabilities)),
            default_read_timeout=store_type.default_read_timeout,
            options=dict(store_type.options),
        )

    def load_all(self) -> pluggy.PluginManager:
        """Load every allowed plugin (broken ones are skipped) and return the manager."""
        with self._lock:
            self._load_all()
        return self._pm

    # -- events ----------------------------------------------------------------------------

    def emit(self, event: RendezvousEvent) -> None:
        """Call every loaded plugin's ``rdzv_event``; exceptions are logged and swallowed."""
        for impl in self._pm.hook.rdzv_event.get_hookimpls():
            try:
                impl.function(event)
            except Exception:
                log.exception("rdzv_event hook of plugin %r failed", impl.plugin_name)

    def node_attributes(self, params: RendezvousParameters) -> list[Mapping[str, Any] | None]:
        """What every loaded plugin's ``rdzv_node_attributes`` declares for ``params``; a
        hook that raises is a RendezvousError naming its plugin."""
        self.load_all()
        declared: list[Mapping[str, Any] | None] = []
        for impl in self._pm.hook.rdzv_node_attributes.get_hookimpls():
            try:
                result = impl.function(params=params) if impl.argnames else impl.function()
            except Exception as e:
                raise RendezvousError(
                    f"The rdzv_node_attributes hook of plugin {impl.plugin_name!r} failed: "
                    f"{type(e).__name__}: {e}"
                ) from e
            if result is not None and not isinstance(result, Mapping):
                raise RendezvousError(
                    f"The rdzv_node_attributes hook of plugin {impl.plugin_name!r} returned "
                    f"{type(result).__name__}, not a mapping of attribute names to values."
                )
            declared.append(result)
        return declared

    def health_check(self, params: RendezvousParameters) -> Callable[[], str | None] | None:
        """The checks every loaded plugin's ``rdzv_health_check`` returns for ``params``,
        as one: None when every check passes, else the first failure's reason (named with
        its plugin). None when no plugin has a check."""
        self.load_all()
        checks: list[tuple[str, Callable[[], str | None]]] = []
        for impl in self._pm.hook.rdzv_health_check.get_hookimpls():
            check = impl.function(params=params) if impl.argnames else impl.function()
            if check is not None:
                if not callable(check):
                    raise RendezvousError(
                        f"The rdzv_health_check hook of plugin {impl.plugin_name!r} returned "
                        f"{type(check).__name__}, not a callable."
                    )
                checks.append((impl.plugin_name, check))
        if not checks:
            return None

        def run_all() -> str | None:
            for name, check in checks:
                reason = check()
                if reason is not None:
                    return f"{reason} (health check of plugin {name!r})"
            return None

        return run_all

    # -- rank orders -----------------------------------------------------------------------

    def rank_orders(self, name: str | None = None) -> dict[str, RankOrderFactory]:
        """Rank order factories by name: from in-process plugins and the
        ``rdzv.rank_orders`` entry points (only the one called ``name`` is loaded when
        given; every allowed one otherwise). A name two plugins provide, or a built-in's,
        is a PluginConflictError; a plugin that fails to load, a PluginLoadError."""
        with self._lock:
            if _autoload():
                for ep in entry_points(group=RANK_ORDER_GROUP):
                    if (name is None or ep.name == name) and _allowed(ep.name):
                        self._load_rank_order(ep)
            found: dict[str, RankOrderFactory] = {}
            owners: dict[str, str] = {}
            for impl in self._pm.hook.rdzv_rank_orders.get_hookimpls():
                declared = impl.function()
                if not isinstance(declared, Mapping):
                    raise PluginLoadError(
                        f"The rdzv_rank_orders hook of plugin {impl.plugin_name!r} returned "
                        f"{type(declared).__name__}, not a mapping of names to factories."
                    )
                for order, factory in declared.items():
                    if order in BUILTIN_ORDERS or order in found:
                        other = "the built-in" if order in BUILTIN_ORDERS else owners[order]
                        raise PluginConflictError(
                            f"Rank order '{order}' of plugin {impl.plugin_name!r} is already "
                            f"provided by {other}."
                        )
                    found[order], owners[order] = factory, impl.plugin_name
            return found

    def rank_order_sources(self) -> dict[str, str]:
        """Every rank order by name (the built-ins first, then by name), with where it
        comes from: ``"built in"``, the ``"<distribution> <version>"`` of its entry point,
        or the name of the plugin registered in this process. Load failures raise as in
        :meth:`rank_orders`."""
        found = {name: "built in" for name in BUILTIN_ORDERS}
        distributions = {
            ep.name: _source(ep).label()
            for ep in entry_points(group=RANK_ORDER_GROUP)
            if _autoload() and _allowed(ep.name)
        }
        with self._lock:
            for name in sorted(self.rank_orders()):
                found[name] = distributions.get(name, "")
            for impl in self._pm.hook.rdzv_rank_orders.get_hookimpls():
                declared = impl.function()
                for name in declared if isinstance(declared, Mapping) else ():
                    found[name] = found[name] or impl.plugin_name
        return found

    def _load_rank_order(self, ep: EntryPoint) -> None:
        source = _source(ep)
        where = f"rank order '{ep.name}' from {source.label()}"
        try:
            plugin = ep.load()
            if not self._pm.is_registered(plugin):
                self._pm.register(plugin, name=f"{RANK_ORDER_GROUP}:{ep.name}")
                self._autoloaded.append(plugin)
            self._pm.check_pending()
        except Exception as e:
            raise PluginLoadError(f"The plugin of {where} failed to load: {e!r}") from e
        provided = [
            impl.function()
            for impl in self._pm.hook.rdzv_rank_orders.get_hookimpls()
            if impl.plugin is plugin
        ]
        if not any(isinstance(p, Mapping) and ep.name in p for p in provided):
            raise PluginLoadError(
                f"The plugin of {where} is invalid: its rdzv_rank_orders hook does not "
                f"provide '{ep.name}' (the entry point's name is the rank order's name)."
            )

    def _rank_order_options(self, params: RendezvousParameters) -> Mapping[str, str]:
        """The config keys a plugin's rank order selected by ``params`` reads."""
        if str(params.get("rank_order", "sorted")).strip().lower() in BUILTIN_ORDERS:
            return {}
        try:
            order = self.rank_policy(params).rank_order
        except Exception:
            return {}  # creating the handler reports it
        return order.options if order is not None else {}

    def exclusion_rule(self, params: RendezvousParameters) -> Exclusion | None:
        """The exclusion rule a plugin's ``rdzv_exclusion_rule`` gives, or None."""
        from .rendezvous.policy import Exclusion

        self.load_all()
        rule = self._pm.hook.rdzv_exclusion_rule(params=params)
        if rule is not None and not isinstance(rule, Exclusion):
            raise RendezvousError(
                f"rdzv_exclusion_rule returned {type(rule).__name__}, not an Exclusion."
            )
        return rule

    def restart_budget(self, params: RendezvousParameters) -> RestartBudget | None:
        """The restart budget a plugin's ``rdzv_restart_budget`` gives, or None."""
        from .rendezvous.policy import RestartBudget

        self.load_all()
        budget = self._pm.hook.rdzv_restart_budget(params=params)
        if budget is not None and not isinstance(budget, RestartBudget):
            raise RendezvousError(
                f"rdzv_restart_budget returned {type(budget).__name__}, not a RestartBudget."
            )
        return budget

    def rank_policy(self, params: RendezvousParameters) -> RankPolicy:
        """The rank policy ``params`` ask for, with plugins' rank orders available."""
        from .rendezvous.policy import RankPolicy

        name = str(params.get("rank_order", "sorted")).strip().lower()
        plugins = {} if name in BUILTIN_ORDERS else self.rank_orders(name)
        return RankPolicy.from_params(params, plugins)

    # -- dispatch --------------------------------------------------------------------------

    def create_store(self, params: RendezvousParameters) -> Store:
        """Open the store ``params`` describe, through its store type's plugin.

        The plugin gets a copy of ``params`` with ``read_timeout`` validated and filled in.
        Config keys nobody reads get an :class:`UnknownOptionWarning`. A ``ValueError`` or
        ``RendezvousError`` from the plugin reaches the caller unchanged; any other failure
        becomes ``RendezvousConnectionError`` with the cause chained. Emits
        ``store_created`` or ``failure``.
        """
        raw = params.get("store_type", "tcp")
        if not isinstance(raw, str):
            raise TypeError(
                f"The rendezvous configuration option 'store_type' must be a string, not "
                f"{type(raw).__name__}."
            )
        name = raw.strip().lower()
        try:
            store_type = self.get(name)
            seconds = parse_read_timeout(params, store_type.default_read_timeout)
            warn_unknown_options(params, store_type, self._rank_order_options(params))
            resolved = copy.copy(params)
            resolved.config = {**params.config, "read_timeout": str(seconds)}
            try:
                store = store_type.create_store(resolved)
            except (ValueError, RendezvousError):
                raise
            except Exception as e:
                raise RendezvousConnectionError(CONNECTION_FAILED) from e
            store.capabilities = store_type.capabilities_of(store)  # type: ignore[misc]
        except Exception as e:
            self.emit(
                RendezvousEvent(
                    EventKind.FAILURE, name, params.run_id, {"step": "create_store"}, error=e
                )
            )
            raise
        self.emit(
            RendezvousEvent(
                EventKind.STORE_CREATED, name, params.run_id, {"endpoint": params.endpoint}
            )
        )
        return store

    def create_backend(self, params: RendezvousParameters) -> tuple[StoreBackend, Store]:
        """The c10d backend for ``params.run_id`` over a new store, and that store."""
        store = self.create_store(params)
        try:
            return StoreBackend(store, params.run_id), store
        except Exception as e:
            store.close()
            self.emit(
                RendezvousEvent(
                    EventKind.FAILURE,
                    store_type_name(params),
                    params.run_id,
                    {"step": "create_backend"},
                    error=e,
                )
            )
            raise


#: Config keys the rendezvous itself reads, whatever the store type.
CORE_OPTIONS = {
    "store_type": "the store type (default tcp)",
    "read_timeout": "seconds a blocking store read waits (default: the store type's)",
    "is_host": "true: this node hosts the store; false: it only connects (store types with a host)",
    "join_timeout": "seconds next_rendezvous may take (600)",
    "last_call_timeout": "seconds a round with min_nodes waits for more (30)",
    "close_timeout": "seconds a hosting node keeps its store up for the others as it leaves (30)",
    "heartbeat_timeout": "seconds one keep-alive may take (5)",
    "keep_alive_interval": "seconds between heartbeats (5)",
    "keep_alive_max_attempt": "missed heartbeats before a node counts as lost (3)",
    "node_attrs": "this node's attributes, key=value pairs separated by ';' (also RDZV_NODE_ATTRS)",
    "rank_order": "sorted (default), sticky (survivors keep their ranks), topology, or a plugin's",
    "rank_key": "the attribute whose nodes get contiguous ranks (rank_order=topology)",
    "rank0": "the node that gets rank 0: attribute=value, or a host name",
    "segment": "only whole groups of this many nodes sharing segment_key's value are active",
    "segment_key": "the attribute a segment's nodes share (segment=N), e.g. nvl_domain",
    "max_restarts": "re-rendezvous that failures may cause before the run is closed (no limit)",
    "health_check": "a command each node runs before it joins a round (exit 0: healthy)",
    "health_timeout": "seconds the health check may take (60)",
    "health_fail_open": "true: a check that crashes or overruns lets the node join (false)",
    "health_interval": "seconds between the health checks of a waiting spare (60)",
    "exclude_by": "the attribute a failing node is excluded by: host (default), rack, ...",
    "cooldown_min": "seconds of the first exclusion; each strike doubles it (60)",
    "cooldown_max": "the longest exclusion in seconds (3600)",
    "max_strikes": "strikes after which an exclusion is permanent (never)",
    "event_log": "a file every event of this process is appended to, one JSON line each",
    "use_agent_store": "torchrun: whether workers reuse the agent's store (rdzv-torch)",
}
#: Keys launchers add on their own (torchrun: "timeout", and "rank" for static runs).
LAUNCHER_OPTIONS = frozenset({"timeout", "rank"})


def warn_unknown_options(
    params: RendezvousParameters, store_type: StoreType, more: Mapping[str, str] = {}
) -> None:
    """Warn about each config key that neither the rendezvous, ``store_type`` nor the
    rank order (``more``) reads."""
    known = [*CORE_OPTIONS, *store_type.options, *more]
    for key in params.config:
        if key in known or key in LAUNCHER_OPTIONS:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        warnings.warn(
            f"The rendezvous option '{key}' is not read by the rendezvous or by store type "
            f"'{store_type.name}' and has no effect; {hint}"
            f"(known options: {', '.join(sorted(known))})",
            UnknownOptionWarning,
            stacklevel=4,
        )


def store_type_name(params: RendezvousParameters) -> str:
    """The normalised store type name of ``params`` (default ``tcp``)."""
    return str(params.get("store_type", "tcp")).strip().lower()


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry the module-level functions use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
    return _default


def create_store(params: RendezvousParameters) -> Store:
    """Open the store described by ``params`` (see :meth:`Registry.create_store`)."""
    return default_registry().create_store(params)


def create_backend(params: RendezvousParameters) -> tuple[StoreBackend, Store]:
    """``(StoreBackend, Store)`` for ``params`` (see :meth:`Registry.create_backend`)."""
    return default_registry().create_backend(params)


def store_types() -> dict[str, StoreType]:
    """Every usable store type by name; loads every allowed plugin."""
    return default_registry().store_types()


def plugins() -> list[PluginInfo]:
    """The plugin report: every discovered store type with provenance and status."""
    return default_registry().plugins()


def register(plugin: object, name: str | None = None) -> StoreType | None:
    """Add an in-process plugin to the default registry."""
    return default_registry().register(plugin, name)


def unregister(plugin: object) -> None:
    """Remove a plugin from the default registry."""
    default_registry().unregister(plugin)


def refresh() -> None:
    """Re-read the entry points of the default registry on next use."""
    default_registry().refresh()
