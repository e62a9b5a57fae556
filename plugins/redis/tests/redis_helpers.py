"""Openers of RedisStore clients for the tests (the servers: rdzv_plugin_redis.testing)."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import redis
from rdzv_plugin_redis import RedisStore
from rdzv_plugin_redis.testing import RedisServer, free_port, start_redis

__all__ = [
    "RedisServer",
    "connections_killed",
    "factory",
    "free_port",
    "open_store",
    "start_redis",
]


def open_store(port: int, prefix: str, **client: object) -> RedisStore:
    return RedisStore(
        host="127.0.0.1", port=port, prefix=prefix, timeout=timedelta(seconds=60), **client
    )


def factory(server: RedisServer) -> functools.partial[RedisStore]:
    """A picklable opener of clients of one fresh prefix on ``server``."""
    return functools.partial(
        open_store, server.port, f"t/{uuid.uuid4().hex[:10]}/", **server.client
    )


@contextmanager
def connections_killed(server: RedisServer) -> Iterator[None]:
    """Every 10 ms, the server closes every client connection but the killer's own: some
    replies are lost after their command ran."""
    admin = server.redis()
    stop = threading.Event()

    def killer() -> None:
        while not stop.wait(0.01):
            try:
                admin.client_kill_filter(_type="normal", skipme=True)
            except redis.exceptions.RedisError:
                pass

    chaos = threading.Thread(target=killer)
    chaos.start()
    try:
        yield
    finally:
        stop.set()
        chaos.join()
