"""rdzv-plugin-redis: the ``redis`` store type.

Importing this package is cheap; redis-py loads on first use of :class:`RedisStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import RedisStore

__all__ = ["RedisStore"]


def __getattr__(name: str) -> object:
    if name == "RedisStore":
        from .store import RedisStore

        return RedisStore
    raise AttributeError(f"module 'rdzv_plugin_redis' has no attribute {name!r}")
