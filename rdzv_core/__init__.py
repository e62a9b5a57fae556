"""rdzv-core: the contracts, plugin registry and dispatcher of the rdzv rendezvous framework.

Everything public is re-exported here; submodules are implementation detail except
``rdzv_core.testing`` (the conformance suite), ``rdzv_core.rendezvous`` (the handler),
``rdzv_core.hookspecs`` (the plugin contract) and ``rdzv_core.events``.
"""

from ._version import __version__ as __version__
from .backend import RendezvousBackend, StoreBackend, Token
from .capability import Capability
from .endpoint import is_local_host, parse_endpoint, parse_read_timeout
from .errors import (
    PluginConflictError,
    PluginLoadError,
    QueueEmptyError,
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousExcludedError,
    RendezvousGracefulExitError,
    RendezvousRestartLimitError,
    RendezvousStateError,
    RendezvousTimeoutError,
    StoreConnectionError,
    StoreDataLostError,
    StoreError,
    StoreTimeoutError,
    UnknownOptionWarning,
    describe_error,
)
from .events import EventKind, RendezvousEvent
from .hookspecs import hookimpl
from .params import RendezvousParameters
from .registry import (
    PluginInfo,
    create_backend,
    create_store,
    plugins,
    refresh,
    register,
    store_types,
    unregister,
)
from .store import PrefixStore, Store
from .storetype import StoreType

__all__ = [
    "Capability",
    "EventKind",
    "PluginConflictError",
    "PluginInfo",
    "PluginLoadError",
    "PrefixStore",
    "QueueEmptyError",
    "RendezvousBackend",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousEvent",
    "RendezvousExcludedError",
    "RendezvousGracefulExitError",
    "RendezvousParameters",
    "RendezvousRestartLimitError",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "Store",
    "StoreBackend",
    "StoreConnectionError",
    "StoreDataLostError",
    "StoreError",
    "StoreTimeoutError",
    "StoreType",
    "Token",
    "UnknownOptionWarning",
    "create_backend",
    "create_store",
    "describe_error",
    "hookimpl",
    "is_local_host",
    "parse_endpoint",
    "parse_read_timeout",
    "plugins",
    "refresh",
    "register",
    "store_types",
    "unregister",
]


def __getattr__(name: str) -> object:
    # The handler lives in a subpackage that is only imported when asked for.
    if name in ("create_handler", "RendezvousHandler", "RendezvousInfo", "RendezvousStoreInfo"):
        from . import rendezvous

        return getattr(rendezvous, name)
    raise AttributeError(f"module 'rdzv_core' has no attribute {name!r}")
