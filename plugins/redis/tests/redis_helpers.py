"""Openers of RedisStore clients for the tests (the servers: rdzv_plugin_redis.testing)."""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta

from rdzv_plugin_redis import RedisStore
from rdzv_plugin_redis.testing import RedisServer, free_port, start_redis

__all__ = ["RedisServer", "factory", "free_port", "open_store", "start_redis"]


def open_store(port: int, prefix: str, **client: object) -> RedisStore:
    return RedisStore(
        host="127.0.0.1", port=port, prefix=prefix, timeout=timedelta(seconds=60), **client
    )


def factory(server: RedisServer) -> functools.partial[RedisStore]:
    """A picklable opener of clients of one fresh prefix on ``server``."""
    return functools.partial(
        open_store, server.port, f"t/{uuid.uuid4().hex[:10]}/", **server.client
    )
