"""RedisStore: the store contract on a Redis server, through redis-py.

Every key lives under ``prefix``. Each write is one server-side script (one round trip,
atomic) that also publishes on the key's channel; a blocked read subscribes to the channels
of the keys it misses, checks them once more, and sleeps until a message or its deadline:
no polling loop. The set of keys (``num_keys``) is kept in one Redis set beside them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from rdzv_core import Capability, Store, StoreConnectionError, StoreError
from rdzv_core.storekit import (
    Value,
    add_to_value,
    as_timeout,
    check_key,
    check_keys,
    check_multi_set,
    timeout_error,
    to_bytes,
    wrap_int64,
)

__all__ = ["RedisStore"]

# KEYS: the key, the key set. ARGV: the value, the channel.
_SET = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return 1
"""
# KEYS: the key, the key set. ARGV: the amount, the channel. INCRBY refuses a non-integer
# (the key stays as it was) and an overflow (the client then wraps, see RedisStore.add).
_ADD = """
local value = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(value) == 'table' and value.err then return value end
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return value
"""
# KEYS: the key, the key set. ARGV: expected, desired, the channel, "1" if expected is "".
_CAS = """
local current = redis.call('GET', KEYS[1])
if current == false then
  if ARGV[4] ~= '1' then return ARGV[1] end
elseif current ~= ARGV[1] then
  return current
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PUBLISH', ARGV[3], '1')
return ARGV[2]
"""
# KEYS: the keys..., then the key set. ARGV: the values..., then the channels.
_MULTI_SET = """
local n = #KEYS - 1
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[i])
  redis.call('SADD', KEYS[n + 1], KEYS[i])
end
for i = 1, n do redis.call('PUBLISH', ARGV[n + i], '1') end
return n
"""
# KEYS: the key, the key set.
_DELETE = """
local gone = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
return gone
"""

_FAILURES = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
_COMMAND_TIMEOUT = 10.0  # seconds: longest a command may go unanswered
_CONNECT_TIMEOUT = 5.0


class RedisStore(Store):
    """A client of the keys under ``prefix`` on a Redis server.

    ``client_options`` go to ``redis.Redis`` (host, port or a URL's parts, db, username,
    password, ssl options). ``persistent`` says the server keeps its data across restarts
    (AOF/RDB configured); only then does the store declare the ``persistent`` capability.
    """

    def __init__(
        self,
        *,
        prefix: str,
        timeout: timedelta = timedelta(seconds=60),
        persistent: bool = False,
        url: str | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__(timeout)
        if not prefix:
            raise ValueError("The Redis key prefix must not be empty.")
        seconds = max(1.0, self.timeout.total_seconds())
        options: dict[str, Any] = {
            # Commands answer at once (blocked reads wait in pub/sub, not in a command):
            # a silent server is a dead one after this long.
            "socket_timeout": min(seconds, _COMMAND_TIMEOUT),
            "socket_connect_timeout": min(seconds, _CONNECT_TIMEOUT),
            "health_check_interval": 30,
            # Never retry: a script resent after a timeout could apply an add twice.
            "retry": Retry(NoBackoff(), 0),
            **client_options,
        }
        self._client = redis.Redis.from_url(url, **options) if url else redis.Redis(**options)
        self._prefix = prefix
        self._keyset = f"{prefix}\x00keys"
        self._channel_base = (
            f"rdzv\x00{self._client.connection_pool.connection_kwargs.get('db', 0)}\x00{prefix}"
        )
        self.capabilities = frozenset(  # type: ignore[misc]
            {Capability.CROSS_PROCESS, Capability.CROSS_HOST, Capability.DELETE}
            | ({Capability.PERSISTENT} if persistent else set())
        )
        self._scripts = {
            name: self._client.register_script(source)
            for name, source in (
                ("set", _SET), ("add", _ADD), ("cas", _CAS),
                ("multi_set", _MULTI_SET), ("delete", _DELETE),
            )
        }  # fmt: skip
        self._closed = False
        self._run(self._client.ping)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"

    # -- plumbing --------------------------------------------------------------------------

    def _k(self, key: str) -> str:
        return self._prefix + key

    def _channel(self, key: str) -> str:
        return f"{self._channel_base}{key}"

    def _run(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise StoreError("This RedisStore is closed.")
        try:
            return call(*args, **kwargs)
        except redis_errors.AuthenticationError as e:
            raise StoreConnectionError(f"Redis refused the credentials: {e}") from e
        except _FAILURES as e:
            raise StoreConnectionError(f"Lost or could not reach Redis: {e}") from e
        except redis_errors.ResponseError as e:
            raise StoreError(f"Redis refused the operation: {e}") from e

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._run(self._scripts[name], keys=keys, args=args)

    # -- the store contract ----------------------------------------------------------------

    def set(self, key: str, value: Value) -> None:
        self._script(
            "set", [self._k(check_key(key)), self._keyset], [to_bytes(value), self._channel(key)]
        )

    def get(self, key: str) -> bytes:
        return self._read([check_key(key)], self.timeout)[0]

    def add(self, key: str, amount: int) -> int:
        full = self._k(check_key(key))
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"The amount to add must be an int, not {type(amount).__name__}.")
        amount = wrap_int64(amount)
        try:
            result = self._script("add", [full, self._keyset], [amount, self._channel(key)])
        except StoreError as e:
            if "overflow" in str(e):
                return self._add_wrapping(key, amount)
            current = self._run(self._client.get, full)
            add_to_value(key, current, amount)  # raises the contract's ValueError
            raise
        return int(result)

    def _add_wrapping(self, key: str, amount: int) -> int:
        """An add that overflows 64 bits, which INCRBY refuses: wrap it here, atomically
        with an optimistic transaction."""
        full = self._k(key)

        def attempt(pipe: Any) -> int:
            result = add_to_value(key, pipe.get(full), amount)
            pipe.multi()
            pipe.set(full, str(result))
            pipe.sadd(self._keyset, full)
            pipe.publish(self._channel(key), "1")
            return result

        return int(self._run(self._client.transaction, attempt, full, value_from_callable=True))

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        want, new = to_bytes(expected), to_bytes(desired)
        full = self._k(check_key(key))
        args = [want, new, self._channel(key), "1" if want == b"" else "0"]
        return bytes(self._script("cas", [full, self._keyset], args))

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        names = check_keys(keys)
        if names:
            self._read(names, as_timeout(timeout, self.timeout))

    def _read(self, names: list[str], limit: timedelta) -> list[bytes]:
        """The values of ``names`` once all exist, waiting up to ``limit`` for them."""
        full = [self._k(n) for n in names]
        found = self._run(self._client.mget, full)
        if all(v is not None for v in found):
            return [bytes(v) for v in found]
        deadline = time.monotonic() + limit.total_seconds()
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            missing = [n for n, v in zip(names, found) if v is None]
            self._run(pubsub.subscribe, *[self._channel(n) for n in missing])
            while True:
                found = self._run(self._client.mget, full)  # after subscribing: no lost wake-up
                if all(v is not None for v in found):
                    return [bytes(v) for v in found]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise timeout_error(names, limit)
                self._run(pubsub.get_message, timeout=min(remaining, 1.0))
        finally:
            try:
                pubsub.close()
            except _FAILURES:
                pass

    def check(self, keys: Sequence[str]) -> bool:
        names = check_keys(keys)
        if not names:
            return True
        unique = {self._k(n) for n in names}
        return int(self._run(self._client.exists, *unique)) == len(unique)

    def delete_key(self, key: str) -> bool:
        return int(self._script("delete", [self._k(check_key(key)), self._keyset], [])) == 1

    def num_keys(self) -> int:
        return int(self._run(self._client.scard, self._keyset))

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        names = check_keys(keys)
        return self._read(names, self.timeout) if names else []

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        names, raws = check_multi_set(keys, values)
        if names:
            full = [self._k(n) for n in names]
            channels = [self._channel(n) for n in names]
            self._script("multi_set", [*full, self._keyset], [*raws, *channels])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
