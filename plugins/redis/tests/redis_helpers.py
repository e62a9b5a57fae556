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
from rdzv_plugin_redis.testing import RedisServer, SentinelGroup, free_port, start_redis

__all__ = [
    "RedisServer",
    "connections_killed",
    "factory",
    "free_port",
    "open_store",
    "rejoin",
    "sentinel_factory",
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


def sentinel_factory(group: SentinelGroup, **options: object) -> functools.partial[RedisStore]:
    """A picklable opener of clients of one fresh prefix on the master ``group``'s
    Sentinels name (timeout 60 s unless ``options`` say otherwise)."""
    return functools.partial(
        RedisStore,
        prefix=f"s/{uuid.uuid4().hex[:10]}/",
        sentinels=[("127.0.0.1", s.port) for s in group.sentinels],
        service=group.service,
        **{"timeout": timedelta(seconds=60), **options},
    )


def rejoin(group: SentinelGroup, killed: RedisServer) -> None:
    """Bring a killed master back, empty, as a replica of the one the Sentinels promoted
    (restarted as a master without its data, it would be a master with no data to a
    Sentinel that has not heard of the failover yet: the hazard Redis's documentation
    warns of)."""
    promoted = group.master(agreed=True)
    killed.restart("--replicaof", "127.0.0.1", str(promoted.port))
