"""rdzv-plugin-etcd: the ``etcd`` store type. :class:`EtcdStore` loads on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

#: The port used when an endpoint names none.
DEFAULT_PORT = 2379

if TYPE_CHECKING:
    from .store import EtcdStore

__all__ = ["DEFAULT_PORT", "EtcdStore"]


def __getattr__(name: str) -> object:
    if name == "EtcdStore":
        from .store import EtcdStore

        return EtcdStore
    raise AttributeError(f"module 'rdzv_plugin_etcd' has no attribute {name!r}")
