"""RedisStore: the store contract on Redis (one server, a Sentinel-watched master, or a
Redis Cluster), through redis-py.

Every key lives under ``prefix`` (in a Cluster, under the hash tag ``{prefix}``, so all of a
run's keys share one slot and its scripts stay atomic). Each write is one server-side script
(one round trip, atomic) that also publishes on the key's channel; a blocked read subscribes
to the channels of the keys it misses, checks them once more, and sleeps until a message or
its deadline. The set of keys (``num_keys``) is kept in one Redis set beside them.

Failover: a call that meets a lost connection, a master being promoted, a read-only former
master or a loading server retries with back-off for up to the store's timeout (with
Sentinel, each new connection asks the Sentinels for the master). ``add``,
``compare_set`` and ``delete_key`` are exactly-once through those retries: each script
records an operation id in a key of the calling thread's own, and compares that key
before applying, so a retry learns whether the first attempt applied and the two can never
both apply.

Data loss: the first client of a prefix writes a random epoch beside its keys, and every
write counts a sequence number there. Each reply brings both back: an epoch that is gone or
different (a server restarted empty, a flushed database), or a sequence number behind one this
client already saw (a failover to a replica that missed the latest writes: a read below it, a
write not above it) fails the call, and every later one, with StoreDataLostError. With
``sync_replicas``, a write is acknowledged only once the replicas hold it.
"""

from __future__ import annotations

import itertools
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from rdzv_core import Capability, Store, StoreConnectionError, StoreDataLostError, StoreError
from rdzv_core.storekit import (
    Value,
    add_to_value,
    as_timeout,
    backoff_delays,
    check_key,
    check_keys,
    check_multi_set,
    queue_empty_error,
    queue_timeout_error,
    timeout_error,
    to_bytes,
    wrap_int64,
)

__all__ = ["RedisStore"]

_T = TypeVar("_T")

# Every script: KEYS[1] the epoch, KEYS[2] the sequence number; ARGV[1] the epoch expected.
# It answers {-2} when the epoch is not ours (the data is gone), else {seq, ...}.
_PROLOGUE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-2} end
"""
# Scripts that apply once also get KEYS[n] = the operation key and, as their last two ARGV,
# the operation id and the operation key's value as the client knows it; {-1, value} means
# an earlier attempt of this client's thread applied since. The key expires after 10
# minutes, which any retry of its operation is far within.
_ONCE = """
local record = redis.call('GET', KEYS[#KEYS]) or ''
if record ~= ARGV[#ARGV] then return {-1, record} end
"""

# KEYS: epoch, seq, the key, the key set. ARGV: epoch, the value, the channel.
_SET = (
    _PROLOGUE
    + """
local seq = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('PUBLISH', ARGV[3], '1')
return {seq}
"""
)
# KEYS: epoch, seq, the key, the key set, the op key. ARGV: epoch, the amount, the channel,
# op id, record. INCRBY refuses a non-integer (the key stays as it was) and an overflow (the
# client then wraps, see RedisStore.add). The new value goes back as text: Lua numbers are
# doubles and would round one beyond 2^53.
_ADD = (
    _PROLOGUE
    + _ONCE
    + """
local value = redis.pcall('INCRBY', KEYS[3], ARGV[2])
if type(value) == 'table' and value.err then return value end
local seq = redis.call('INCR', KEYS[2])
local text = redis.call('GET', KEYS[3])
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('PUBLISH', ARGV[3], '1')
local mark = ARGV[4] .. ' ' .. text
redis.call('SET', KEYS[5], mark, 'PX', 600000)
return {seq, text, mark}
"""
)
# KEYS: epoch, seq, the key, the key set, the op key. ARGV: epoch, expected, desired, the
# channel, "1" if expected is "", op id, record.
_CAS = (
    _PROLOGUE
    + _ONCE
    + """
local seq = redis.call('INCR', KEYS[2])
local current = redis.call('GET', KEYS[3])
if current == false then
  if ARGV[5] ~= '1' then return {seq, ARGV[2], ''} end
elseif current ~= ARGV[2] then
  return {seq, current, ''}
end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('PUBLISH', ARGV[4], '1')
redis.call('SET', KEYS[5], ARGV[6], 'PX', 600000)
return {seq, ARGV[3], ARGV[6]}
"""
)
# KEYS: epoch, seq, the keys..., the key set. ARGV: epoch, the values..., the channels...
_MULTI_SET = (
    _PROLOGUE
    + """
local seq = redis.call('INCR', KEYS[2])
local n = #KEYS - 3
for i = 1, n do
  redis.call('SET', KEYS[i + 2], ARGV[i + 1])
  redis.call('SADD', KEYS[#KEYS], KEYS[i + 2])
end
for i = 1, n do redis.call('PUBLISH', ARGV[n + i + 1], '1') end
return {seq}
"""
)
# KEYS: epoch, seq, the key, the key set, the op key. ARGV: epoch, op id, record.
_DELETE = (
    _PROLOGUE
    + _ONCE
    + """
local seq = redis.call('INCR', KEYS[2])
local gone = redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], KEYS[3])
if gone == 0 then return {seq, 0, ''} end
redis.call('SET', KEYS[5], ARGV[2], 'PX', 600000)
return {seq, 1, ARGV[2]}
"""
)
# KEYS: epoch, seq, the key, the key set, the op key. ARGV: epoch, the tail, the channel,
# op id, record.
_APPEND = (
    _PROLOGUE
    + _ONCE
    + """
local seq = redis.call('INCR', KEYS[2])
redis.call('APPEND', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('PUBLISH', ARGV[3], '1')
redis.call('SET', KEYS[5], ARGV[4], 'PX', 600000)
return {seq, 1, ARGV[4]}
"""
)
# KEYS: epoch, seq, the queue, the op key. ARGV: epoch, the item, the channel, op id, record.
_PUSH = (
    _PROLOGUE
    + _ONCE
    + """
local seq = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[3], '1')
redis.call('SET', KEYS[4], ARGV[4], 'PX', 600000)
return {seq, 1, ARGV[4]}
"""
)
# KEYS: epoch, seq, the queue, the op key. ARGV: epoch, op id, record. The record keeps the
# item (after the op id and a space), so a retry that finds it applied still returns it.
_POP = (
    _PROLOGUE
    + _ONCE
    + """
local seq = redis.call('INCR', KEYS[2])
local item = redis.call('LPOP', KEYS[3])
if item == false then return {seq, 0, ''} end
local mark = ARGV[2] .. ' ' .. item
redis.call('SET', KEYS[4], mark, 'PX', 600000)
return {seq, 1, mark}
"""
)
# KEYS: epoch, seq, the op key. ARGV: epoch. A write (it counts one) that reads the
# operation record: once the replicas confirm it, they hold every write before it too.
_SETTLE = (
    _PROLOGUE
    + """
return {redis.call('INCR', KEYS[2]), redis.call('GET', KEYS[3]) or ''}
"""
)
# KEYS: epoch, seq, the key set or a queue. ARGV: "list" for the key set's members.
_INSPECT = """
local found
if ARGV[1] == 'list' then found = redis.call('SMEMBERS', KEYS[3])
else found = redis.call('LLEN', KEYS[3]) end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]) or '0', found}
"""
# KEYS: epoch, seq, the key set.
_COUNT = """
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]) or '0', redis.call('SCARD', KEYS[3])}
"""
# KEYS: epoch, seq. ARGV: a new epoch, used if the prefix has none yet.
_OPEN = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]) or '0'}
"""

# Failures another attempt may not meet: the connection, a master being replaced, a
# read-only former master, a server loading its data, a Cluster moving its slots.
_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    OSError,
)
# Error replies another attempt may not meet (NOREPLICAS: a master configured with
# min-replicas-to-write that has too few replicas now).
_TRANSIENT_REPLIES = ("LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")
_COMMAND_TIMEOUT = 5.0  # seconds: longest one command may go unanswered before a retry
_CONNECT_TIMEOUT = 5.0
_REPLICA_WAIT_MS = 1000  # how long a write waits for its replicas (sync_replicas)


def _tls_refused(error: BaseException) -> bool:
    """A TLS handshake that failed on a certificate or protocol: no retry can fix it."""
    causes = [error, error.__cause__, error.__context__]
    return any(isinstance(c, ssl.SSLError) for c in causes) or "SSL:" in str(error)


class _Transient(Exception):
    """One attempt failed in a way another attempt may not."""


class _Unconfirmed(_Transient):
    """A write ran on the master but fewer replicas than ``sync_replicas`` confirmed it."""


class _Operations(threading.local):
    """The calling thread's operation key and its value as this thread last knew it."""

    key: str = ""
    record: bytes = b""


class RedisStore(Store):
    """A client of the keys under ``prefix`` on Redis.

    One server: ``client_options`` go to ``redis.Redis`` (host, port or a ``url``, db,
    username, password, ssl options). Sentinel: ``sentinels`` (``(host, port)`` pairs) and
    ``service`` name the master to follow; ``sentinel_options`` go to the Sentinel
    connections, ``client_options`` to the master's. Cluster: ``cluster_nodes`` (``(host,
    port)`` pairs) are where to discover the cluster. With ``sync_replicas``, a write
    returns only once that many replicas hold it (Redis WAIT, retried for up to the
    timeout), so a failover to one of them keeps it. ``persistent`` says the server keeps
    its data across restarts (AOF/RDB configured); only then does the store declare the
    ``persistent`` capability.
    """

    def __init__(
        self,
        *,
        prefix: str,
        timeout: timedelta = timedelta(seconds=60),
        persistent: bool = False,
        url: str | None = None,
        sentinels: Sequence[tuple[str, int]] = (),
        service: str | None = None,
        sentinel_options: Mapping[str, Any] | None = None,
        cluster_nodes: Sequence[tuple[str, int]] = (),
        sync_replicas: int = 0,
        **client_options: Any,
    ) -> None:
        super().__init__(timeout)
        if not prefix:
            raise ValueError("The Redis key prefix must not be empty.")
        if bool(sentinels) != bool(service):
            raise ValueError("Give both 'sentinels' and 'service' to follow a Sentinel master.")
        if not 0 <= sync_replicas <= 16:
            raise ValueError(f"sync_replicas must be from 0 to 16, got {sync_replicas}.")
        self._sync_replicas = sync_replicas
        if sentinels and cluster_nodes:
            raise ValueError("A Redis store follows a Sentinel master or a Cluster, not both.")
        if cluster_nodes and ("{" in prefix or "}" in prefix):
            raise ValueError(
                f"The Redis key prefix {prefix!r} must not contain braces in a Cluster: the "
                "store wraps it in {...} so that all of a run's keys share one hash slot."
            )
        self._seconds = max(1.0, self.timeout.total_seconds())
        options: dict[str, Any] = {
            # Commands answer at once (blocked reads wait in pub/sub, not in a command):
            # a silent server is a dead one after this long, and the call retries.
            "socket_timeout": min(self._seconds, _COMMAND_TIMEOUT),
            "socket_connect_timeout": min(self._seconds, _CONNECT_TIMEOUT),
            "health_check_interval": 30,
            # redis-py never resends for us: this store retries itself, exactly once.
            "retry": Retry(NoBackoff(), 0),
            **client_options,
        }
        self.where = self._describe(url, sentinels, service, cluster_nodes, options)
        self._client: Any = self._connect(
            url, sentinels, service, sentinel_options, cluster_nodes, options
        )
        self._cluster = bool(cluster_nodes)
        self._prefix = prefix
        base = "{" + prefix + "}" if cluster_nodes else prefix
        self._base = base
        self._keyset = f"{base}\x00keys"
        self._meta = [f"{base}\x00epoch", f"{base}\x00seq"]
        db = 0 if cluster_nodes else self._client.connection_pool.connection_kwargs.get("db", 0)
        self._channel_base = f"rdzv\x00{db}\x00{prefix}"
        self.capabilities = frozenset(  # type: ignore[misc]
            {
                Capability.CROSS_PROCESS,
                Capability.CROSS_HOST,
                Capability.DELETE,
                Capability.APPEND,
                Capability.LIST_KEYS,
                Capability.QUEUES,
            }
            | ({Capability.PERSISTENT} if persistent else set())
        )
        self._scripts = {
            name: self._client.register_script(source)
            for name, source in (
                ("set", _SET), ("add", _ADD), ("cas", _CAS), ("multi_set", _MULTI_SET),
                ("delete", _DELETE), ("open", _OPEN), ("count", _COUNT),
                ("append", _APPEND), ("push", _PUSH), ("pop", _POP), ("inspect", _INSPECT),
                ("settle", _SETTLE),
            )
        }  # fmt: skip
        self._closed = False
        self._lost: str | None = None
        self._seq = 0  # the highest sequence number seen: it never goes back
        self._ops = _Operations()
        self._op_base = f"{base}\x00op/{secrets.token_hex(6)}/"
        self._op_ids = itertools.count(1)
        self._threads = itertools.count(1)
        if cluster_nodes:
            self._check_slot()
        epoch, seq = self._call(self._scripts["open"], keys=self._meta, args=[secrets.token_hex(8)])
        self._epoch = bytes(epoch)
        self._seq = int(seq)

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r}, prefix={self._prefix!r})"

    # -- connecting ------------------------------------------------------------------------

    @staticmethod
    def _describe(
        url: str | None,
        sentinels: Sequence[tuple[str, int]],
        service: str | None,
        cluster_nodes: Sequence[tuple[str, int]],
        options: Mapping[str, Any],
    ) -> str:
        def hosts(pairs: Sequence[tuple[str, int]]) -> str:
            return ",".join(f"{h}:{p}" for h, p in pairs)

        if sentinels:
            return f"the master '{service}' of the Sentinels at {hosts(sentinels)}"
        if cluster_nodes:
            return f"the Redis Cluster at {hosts(cluster_nodes)}"
        if url:
            return url.split("@")[-1]
        return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"

    def _connect(
        self,
        url: str | None,
        sentinels: Sequence[tuple[str, int]],
        service: str | None,
        sentinel_options: Mapping[str, Any] | None,
        cluster_nodes: Sequence[tuple[str, int]],
        options: dict[str, Any],
    ) -> Any:
        if sentinels:
            from redis.sentinel import Sentinel

            sentinel_kwargs = {
                "socket_timeout": options["socket_timeout"],
                "socket_connect_timeout": options["socket_connect_timeout"],
                **(sentinel_options or {}),
            }
            watcher = Sentinel(  # type: ignore[no-untyped-call]
                list(sentinels), sentinel_kwargs=sentinel_kwargs, **options
            )
            self._check_service(watcher, str(service), sentinels)
            return watcher.master_for(str(service), **options)  # type: ignore[no-untyped-call]
        if cluster_nodes:
            from redis.cluster import ClusterNode, RedisCluster

            options.pop("health_check_interval", None)
            nodes = [ClusterNode(h, p) for h, p in cluster_nodes]  # type: ignore[no-untyped-call]
            try:
                return RedisCluster(startup_nodes=nodes, require_full_coverage=False, **options)
            except redis_errors.RedisError as e:
                raise StoreConnectionError(f"Could not reach {self.where}: {e}") from e
        return redis.Redis.from_url(url, **options) if url else redis.Redis(**options)

    def _check_service(
        self, watcher: Any, service: str, sentinels: Sequence[tuple[str, int]]
    ) -> None:
        """Refuse a service no reachable Sentinel monitors (a typo would look like an
        endless failover otherwise)."""
        known: set[str] = set()
        answered = 0
        for sentinel in watcher.sentinels:
            try:
                masters = sentinel.sentinel_masters()
            except redis_errors.AuthenticationError as e:
                raise StoreConnectionError(
                    f"A Sentinel of {self.where} refused the credentials: {e}"
                ) from e
            except redis_errors.RedisError:
                continue
            answered += 1
            known.update(str(name) for name in masters)
        if answered and service not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ValueError(
                f"No Sentinel at {','.join(f'{h}:{p}' for h, p in sentinels)} monitors a "
                f"service named {service!r} (they monitor: {names})."
            )

    def _check_slot(self) -> None:
        slot = self._client.keyslot(self._meta[0])
        try:
            self._client.nodes_manager.get_node_from_slot(slot)
        except (redis_errors.SlotNotCoveredError, redis_errors.RedisClusterException) as e:
            raise StoreConnectionError(
                f"{self.where} serves no node for hash slot {slot}, where the keys of prefix "
                f"{self._prefix!r} (hash tag {{{self._prefix}}}) live: assign the slot, or "
                f"use another prefix. ({e})"
            ) from e

    # -- plumbing --------------------------------------------------------------------------

    def _k(self, key: str) -> str:
        return self._base + key

    def _channel(self, key: str) -> str:
        return f"{self._channel_base}{key}"

    def _attempt(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One attempt: its result, or _Transient, or the contract's error."""
        if self._closed:
            raise StoreError("This RedisStore is closed.")
        if self._lost:
            raise StoreDataLostError(self._lost)
        try:
            return call(*args, **kwargs)
        except redis_errors.AuthenticationError as e:
            raise StoreConnectionError(f"Redis ({self.where}) refused the credentials: {e}") from e
        except redis_errors.ReadOnlyError as e:
            self._client.connection_pool.disconnect()  # a demoted master: find the new one
            raise _Transient(str(e)) from e
        except _Unconfirmed:
            self._client.connection_pool.disconnect()  # a replaced master? ask again
            raise
        except _TRANSIENT as e:
            if _tls_refused(e):
                raise StoreConnectionError(f"TLS with Redis ({self.where}) failed: {e}") from e
            raise _Transient(f"{type(e).__name__}: {e}") from e
        except redis_errors.ResponseError as e:
            if str(e).startswith(_TRANSIENT_REPLIES):
                raise _Transient(str(e)) from e
            raise StoreError(f"Redis ({self.where}) refused the operation: {e}") from e

    def _call(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call`` retried through transient failures, with back-off, for up to the
        store's timeout; then StoreConnectionError."""
        deadline = time.monotonic() + self._seconds
        delays = backoff_delays()
        while True:
            try:
                return self._attempt(call, *args, **kwargs)
            except _Transient as e:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._unreachable(e) from e.__cause__
                time.sleep(min(next(delays), remaining))

    def _unreachable(self, error: _Transient) -> StoreConnectionError:
        if isinstance(error, _Unconfirmed):
            return StoreConnectionError(
                f"Redis ({self.where}) did not get a write to {self._sync_replicas} replicas "
                f"(sync_replicas) for {self._seconds:g} s: {error}; the write may be on the "
                "master only. Check that the replicas are up and following the master."
            )
        return StoreConnectionError(
            f"Lost or could not reach Redis ({self.where}) for {self._seconds:g} s: {error}"
        )

    def _run_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One run of script ``name``; with ``sync_replicas``, followed in the same round
        trip by Redis's WAIT for that many replicas to hold the write. Fewer replicas within
        the wait is _Transient: the write ran on a master that may be cut off from its
        replicas (and lose it when demoted), so it is not acknowledged."""
        script = self._scripts[name]
        if not self._sync_replicas:
            return script(keys=keys, args=args)
        with self._client.pipeline(transaction=False) as pipe:
            script(keys=keys, args=args, client=pipe)
            pipe.wait(self._sync_replicas, _REPLICA_WAIT_MS)
            reply, held = pipe.execute()
        if held < self._sync_replicas:
            raise _Unconfirmed(
                f"the write reached {held} of the {self._sync_replicas} replicas asked for "
                f"(sync_replicas) within {_REPLICA_WAIT_MS / 1000:g} s"
            )
        return reply

    def _checked(self, reply: Any, floor: int) -> Any:
        """A write script's reply, checked for data loss against what was seen before
        sending (the write counted one more, so its count must be above ``floor``)."""
        if reply[0] == -2:
            self._lose("the run's epoch key is gone or replaced (a server restarted without "
                       "its data, or a flushed database)")  # fmt: skip
        if reply[0] != -1:
            self._see(int(reply[0]), floor, wrote=True)
        return reply

    def _see(self, seq: int, floor: int, *, wrote: bool = False) -> None:
        """Record write count ``seq``, answered by a server after this client had seen
        ``floor``; below it (or not above it, for a write), the data is lost."""
        if seq < floor + wrote:
            self._lose(f"its write count went back: it answered {seq} to a "
                       f"{'write' if wrote else 'read'} after this client had seen {floor} (a "
                       "failover to a replica that had not received the latest writes)")  # fmt: skip
        self._seq = max(self._seq, seq)

    def _lose(self, reason: str) -> None:
        self._lost = (
            f"Redis ({self.where}) lost the data this store held: {reason}. The run's keys are "
            "gone or older than what its nodes saw; start the run again."
        )
        raise StoreDataLostError(self._lost)

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        floor = self._seq
        reply = self._call(self._run_script, name, [*self._meta, *keys], [self._epoch, *args])
        return self._checked(reply, floor)

    def _values(self, full: list[str]) -> list[Any]:
        """MGET of ``full`` with the epoch and sequence number, checked."""
        floor = self._seq
        reply: list[Any] = self._call(self._client.mget, [*self._meta, *full])
        epoch, seq, *values = reply
        self._check_meta(epoch, seq, floor)
        return values

    def _check_meta(self, epoch: bytes | None, seq: bytes | int | None, floor: int) -> None:
        """Check the epoch and write count a read brought back (see the module docstring)."""
        if epoch != self._epoch:
            self._checked([-2], floor)
        self._see(int(seq or 0), floor)

    def _operations(self) -> _Operations:
        ops = self._ops
        if not ops.key:
            ops.key = f"{self._op_base}{next(self._threads)}"
        return ops

    def _once(self, name: str, keys: list[str], args: list[Any]) -> tuple[Any, bool]:
        """Run script ``name`` exactly once through failures: (its reply, False), or
        (the operation record of an attempt of this call that applied, True)."""
        ops = self._operations()
        mine: set[bytes] = set()
        delays = backoff_delays()
        deadline = time.monotonic() + self._seconds
        while True:
            op = str(next(self._op_ids)).encode()
            floor = self._seq
            try:
                reply = self._attempt(
                    self._run_script,
                    name,
                    [*self._meta, *keys, ops.key],
                    [self._epoch, *args, op, ops.record],
                )
            except _Transient as e:
                mine.add(op)
                if time.monotonic() > deadline:
                    raise self._unreachable(e) from e.__cause__
                time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))
                record = self._settled_record(ops.key)  # applied or not: the record tells
            else:
                self._checked(reply, floor)
                if reply[0] != -1:
                    if reply[-1]:
                        ops.record = bytes(reply[-1])
                    return reply, False
                record = bytes(reply[1])
            ops.record = record
            if record.partition(b" ")[0] in mine:
                return record, True

    def _settled_record(self, key: str) -> bytes:
        """The operation record at ``key`` on the master. With ``sync_replicas``, read by a
        write the replicas confirm: an attempt the record shows applied is then held by them
        too, and one it does not show can no longer appear (its master was replaced)."""
        if not self._sync_replicas:
            (record,) = self._values([key])
            return bytes(record or b"")
        floor = self._seq
        reply = self._call(self._run_script, "settle", [*self._meta, key], [self._epoch])
        return bytes(self._checked(reply, floor)[1])

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
            reply, applied = self._once("add", [full, self._keyset], [amount, self._channel(key)])
        except StoreError as e:
            if isinstance(e, StoreConnectionError):
                raise  # retried for read_timeout already (or the data is gone)
            if "overflow" in str(e):
                return self._add_wrapping(key, amount)
            (current,) = self._values([full])
            add_to_value(key, current, amount)  # raises the contract's ValueError
            raise
        return int(reply.partition(b" ")[2] if applied else reply[1])

    def _add_wrapping(self, key: str, amount: int) -> int:
        """An add that overflows 64 bits, which INCRBY refuses: wrap it here, then write
        it with the compare-and-set script (exactly once), retried if the value moved."""
        full = self._k(key)
        while True:
            (current,) = self._values([full])
            result = add_to_value(key, current, amount)
            expected = b"" if current is None else bytes(current)
            flag = "1" if current is None else "0"
            args = [expected, str(result).encode(), self._channel(key), flag]
            reply, applied = self._once("cas", [full, self._keyset], args)
            if applied or reply[-1]:  # the script names its operation only when it wrote
                return result

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        want, new = to_bytes(expected), to_bytes(desired)
        full = self._k(check_key(key))
        args = [want, new, self._channel(key), "1" if want == b"" else "0"]
        reply, applied = self._once("cas", [full, self._keyset], args)
        return new if applied else bytes(reply[1])

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        names = check_keys(keys)
        if names:
            self._read(names, as_timeout(timeout, self.timeout))

    def _read(self, names: list[str], limit: timedelta) -> list[bytes]:
        """The values of ``names`` once all exist, waiting up to ``limit`` for them."""
        full = [self._k(n) for n in names]

        def present() -> list[bytes] | None:
            found = self._values(full)
            return [bytes(v) for v in found] if all(v is not None for v in found) else None

        values = present()
        if values is not None:
            return values
        channels = [self._channel(n) for n in names]
        values = self._wait_on(channels, present, time.monotonic() + limit.total_seconds())
        if values is None:
            raise timeout_error(names, limit)
        return values

    def _wait_on(
        self, channels: list[str], attempt: Callable[[], _T | None], deadline: float
    ) -> _T | None:
        """``attempt()`` once it returns something, retried whenever a message arrives on
        ``channels`` (subscribed before each retry: no wake-up is lost); None once
        ``deadline`` (monotonic) passes."""
        pubsub: Any = None
        delays = backoff_delays()
        try:
            while True:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    try:
                        self._attempt(pubsub.subscribe, *channels)
                    except _Transient:  # the retry below rides out the failover
                        pubsub = self._close_pubsub(pubsub)
                        time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))
                result = attempt()
                if result is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if pubsub is not None:
                    try:
                        self._attempt(pubsub.get_message, timeout=min(remaining, 1.0))
                    except _Transient:
                        pubsub = self._close_pubsub(pubsub)
        finally:
            self._close_pubsub(pubsub)

    @staticmethod
    def _close_pubsub(pubsub: Any) -> None:
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis_errors.RedisError, OSError):
                pass

    def check(self, keys: Sequence[str]) -> bool:
        names = check_keys(keys)
        if not names:
            return True
        return all(v is not None for v in self._values([self._k(n) for n in names]))

    def delete_key(self, key: str) -> bool:
        full = self._k(check_key(key))
        reply, applied = self._once("delete", [full, self._keyset], [])
        return applied or int(reply[1]) == 1

    def num_keys(self) -> int:
        floor = self._seq
        keys = [*self._meta, self._keyset]
        epoch, seq, count = self._call(self._scripts["count"], keys=keys)
        self._check_meta(epoch, seq, floor)
        return int(count)

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        names = check_keys(keys)
        return self._read(names, self.timeout) if names else []

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        names, raws = check_multi_set(keys, values)
        if names:
            full = [self._k(n) for n in names]
            channels = [self._channel(n) for n in names]
            self._script("multi_set", [*full, self._keyset], [*raws, *channels])

    def append(self, key: str, value: Value) -> None:
        full = self._k(check_key(key))
        self._once("append", [full, self._keyset], [to_bytes(value), self._channel(key)])

    def list_keys(self) -> list[str]:
        found = self._inspect(self._keyset, "list")
        start = len(self._base.encode())
        return [bytes(k)[start:].decode() for k in found]

    def _inspect(self, key: str, what: str) -> Any:
        floor = self._seq
        epoch, seq, found = self._call(
            self._scripts["inspect"], keys=[*self._meta, key], args=[what]
        )
        self._check_meta(epoch, seq, floor)
        return found

    def _queue(self, key: str) -> str:
        return f"{self._base}\x00queue/{check_key(key)}"

    def queue_push(self, key: str, value: Value) -> None:
        channel = self._channel(f"\x00queue/{check_key(key)}")
        self._once("push", [self._queue(key)], [to_bytes(value), channel])

    def queue_len(self, key: str) -> int:
        return int(self._inspect(self._queue(key), "len"))

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        limit = as_timeout(timeout, self.timeout)
        queue = self._queue(key)

        def pop() -> bytes | None:
            reply, applied = self._once("pop", [queue], [])
            if applied:
                return bytes(reply.partition(b" ")[2])
            return bytes(reply[-1]).partition(b" ")[2] if int(reply[1]) else None

        item = pop()
        if item is not None:
            return item
        if not block:
            raise queue_empty_error(key)
        channel = self._channel(f"\x00queue/{key}")
        item = self._wait_on([channel], pop, time.monotonic() + limit.total_seconds())
        if item is None:
            raise queue_timeout_error(key, limit)
        return item

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
