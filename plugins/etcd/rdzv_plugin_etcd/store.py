"""EtcdStore: the store contract over etcd's v3 API, spoken as JSON to etcd's gateway.

Every key lives under ``prefix``. ``add`` and ``compare_set`` are single transactions
(compared on value, creation or modification revision); ``multi_get``/``multi_set`` are one
transaction each. A blocking read ranges the key and, if it is missing, watches it from the
range's revision + 1, so a write between the two is never missed.

Failover: the store knows every member it was given and talks to one at a time. A request
that fails on the way (member dead, unreachable, mid-election: "leader changed", "request
timed out", "no leader") moves to the next member and is retried with back-off until the
call's deadline (the store's timeout). Reads and plain writes are retried as they are. An
``add`` or ``compare_set`` whose outcome is unknown is never blindly resent: each writes,
in the same transaction, an operation id to a key of the calling thread's own and compares
that key's revision. After a lost reply, a fence rewrites that key unless the attempt
applied, so the retry learns whether it did, and an attempt a failover delays can never
apply after the retry.

Data loss: every reply carries the cluster id and the store revision. A cluster id that
changes, or a revision lower than one this client already saw, means the data it knew is
gone (a wiped or restored etcd): the call and every later one raise StoreDataLostError.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import requests

from rdzv_core import (
    Capability,
    Store,
    StoreConnectionError,
    StoreDataLostError,
    StoreError,
)
from rdzv_core.params import MAX_SECONDS
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
)

__all__ = ["EtcdAuthenticationError", "EtcdStore"]

_PROBE_SECONDS = 1.0  # how often a blocked read re-checks the key and etcd's health
_ATTEMPT_SECONDS = 2.0  # longest one request may take before the next member is tried
_TXN_OPS = 128  # etcd's default --max-txn-ops
# gRPC codes etcd answers while it cannot serve for a moment: DeadlineExceeded,
# ResourceExhausted ("too many requests"), Unavailable (no leader, leader changed, ...).
_RETRYABLE_CODES = {4, 8, 14}
_RETRYABLE_TEXT = ("leader changed", "no leader", "timed out", "too many requests", "stopped")


class EtcdAuthenticationError(StoreError):
    """etcd rejected the credentials, or demands credentials that were not given."""


class _Transient(Exception):
    """One request failed in a way another attempt (on this member or another) may not."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b"\x00"


def _mod_is(key: bytes, revision: str | int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def _get(key: bytes) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def _kv(response: dict[str, Any]) -> dict[str, Any] | None:
    kvs = response["response_range"].get("kvs") or []
    return kvs[0] if kvs else None


class _Operations(threading.local):
    """The calling thread's operation key: which of its adds and compare_sets applied."""

    key: bytes = b""
    revision: str = "0"  # the key's mod_revision as this thread last knew it (0: absent)


def _check_member(host: str, port: int) -> None:
    """A clear error for a host given with its port, or a port out of range."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            name, _, given = host.rpartition(":")
            raise ValueError(
                f"The etcd host must be a name or an address without a port, got {host!r}: "
                f"give the port apart (host={name!r}, port={given})."
            ) from None
    if not 1 <= port <= 65535:
        raise ValueError(f"The etcd port must be from 1 to 65535, got {port}.")


class EtcdStore(Store):
    """A store on an etcd v3 cluster; every key lives under ``prefix``.

    ``host``/``port`` name one member; ``members`` (``(host, port)`` pairs) the others the
    store may fail over to. ``ttl`` (seconds) attaches every key to a lease shared by every
    client of the prefix and refreshed by each of them, so a run's keys vanish ``ttl`` after
    its last client goes. ``user``/``password`` authenticate; ``protocol="https"`` with
    ``ca_cert`` (and ``cert``/``key`` for client certificates) speaks TLS. Each call keeps
    retrying through failures until ``timeout`` (the constructor too, for etcd to answer),
    then raises StoreConnectionError.
    """

    def __init__(
        self,
        host: str,
        port: int = 2379,
        *,
        members: Sequence[tuple[str, int]] = (),
        prefix: str = "/rdzv/",
        timeout: timedelta = timedelta(seconds=60),
        ttl: int | None = None,
        user: str | None = None,
        password: str | None = None,
        protocol: str = "http",
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(timeout)
        if protocol not in ("http", "https"):
            raise ValueError(f"The etcd protocol must be http or https, got {protocol!r}.")
        if bool(user) != bool(password):
            raise ValueError("Give both 'user' and 'password' for etcd, or neither.")
        if ttl is not None and not 1 <= ttl <= MAX_SECONDS:
            raise ValueError(
                f"The etcd lease ttl must be from 1 to {MAX_SECONDS} seconds, got {ttl}."
            )
        for h, p in [(host, port), *members]:
            _check_member(h, p)
        self.host, self.port, self.prefix = host, port, prefix
        self._urls = [
            f"{protocol}://{f'[{h}]' if ':' in h else h}:{p}"
            for h, p in dict.fromkeys([(host, port), *members])
        ]
        self.where = ",".join(self._urls)
        self._current = 0
        self._seconds = max(1.0, self.timeout.total_seconds())
        self._prefix = prefix.encode()
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or netrc lookups on every request
        if ca_cert:
            self._session.verify = ca_cert
        if cert and key:
            self._session.cert = (cert, key)
        self._credentials = (user, password) if user and password else None
        self._closed = False
        self._lost: str | None = None
        self._cluster: str | None = None
        self._revision = 0  # the highest store revision seen: it never goes back
        self._ops = _Operations()
        self._op_prefix = b"/rdzv-ops" + self._prefix + secrets.token_hex(6).encode() + b"."
        self._op_ids = itertools.count(1)
        self._threads = itertools.count(1)
        self._lease: str | None = None
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        try:
            self._post("/kv/range", {"key": _b64(self._prefix), "count_only": True})
        except StoreConnectionError as e:
            raise StoreConnectionError(
                f"Could not reach etcd at {self.where} within {self._seconds:g} s: {e}"
            ) from e
        # Keys under a lease vanish after the last client: leases, not persistence.
        self.capabilities = frozenset(  # type: ignore[misc]
            {
                Capability.CROSS_PROCESS,
                Capability.CROSS_HOST,
                Capability.DELETE,
                Capability.APPEND,
                Capability.LIST_KEYS,
                Capability.QUEUES,
            }
            | {Capability.LEASES if ttl is not None else Capability.PERSISTENT}
        )
        if ttl is not None:
            self._lease = self._shared_lease(ttl)
            self._keepalive = threading.Thread(
                target=self._refresh_lease, args=(ttl,), name="rdzv-etcd-lease", daemon=True
            )
            self._keepalive.start()

    def __repr__(self) -> str:
        return f"EtcdStore({self.where!r}, prefix={self.prefix!r})"

    # -- transport -------------------------------------------------------------------------

    def _send(self, url: str, path: str, body: dict[str, Any], seconds: float) -> dict[str, Any]:
        """One request to one member: its reply, StoreError if etcd refused it, _Transient
        if it failed on the way or etcd cannot serve for a moment."""
        try:
            response = self._session.post(f"{url}/v3{path}", json=body, timeout=seconds)
        except requests.RequestException as e:
            raise _Transient(f"{url}: {e}") from e
        try:
            reply: dict[str, Any] = response.json()
        except ValueError:
            reply = {}
        if response.status_code == 200 and reply:
            return reply
        text = str(reply.get("error") or reply.get("message") or response.text or response.reason)
        if (
            reply.get("code") in _RETRYABLE_CODES
            or response.status_code in (502, 503, 504)
            or any(part in text for part in _RETRYABLE_TEXT)
        ):
            raise _Transient(f"{url}: {text}")
        if "user name is empty" in text or "permission denied" in text:
            raise EtcdAuthenticationError(
                f"etcd at {url} requires authentication (config 'user' and 'password') or "
                f"denied access: {text}"
            )
        raise StoreError(f"etcd at {url} refused {path}: {text}")

    def _authorized(self, url: str, path: str, body: dict[str, Any], seconds: float) -> Any:
        if self._credentials and "Authorization" not in self._session.headers:
            self._authenticate(url, seconds)
        try:
            return self._send(url, path, body, seconds)
        except StoreError as e:
            if not (self._credentials and "invalid auth token" in str(e)):
                raise
        self._authenticate(url, seconds)  # this member does not know our token: log in
        return self._send(url, path, body, seconds)

    def _authenticate(self, url: str, seconds: float) -> None:
        assert self._credentials is not None
        user, password = self._credentials
        self._session.headers.pop("Authorization", None)
        try:
            reply = self._send(
                url, "/auth/authenticate", {"name": user, "password": password}, seconds
            )
        except StoreError as e:
            raise EtcdAuthenticationError(
                f"etcd at {url} rejected the credentials of user {user!r}: {e}"
            ) from e
        self._session.headers["Authorization"] = reply["token"]

    def _post(
        self, path: str, body: dict[str, Any], deadline: float | None = None, *, once: bool = False
    ) -> dict[str, Any]:
        """``body`` sent to the current member; on a failure on the way, to the next one,
        with back-off, until ``deadline`` (default: the store's timeout from now: a blocked
        read's shorter deadline bounds its waiting, not its riding out of a failover). With
        ``once``, a single attempt that raises _Transient on such a failure."""
        if self._closed:
            raise StoreError("This EtcdStore is closed.")
        if self._lost:
            raise StoreDataLostError(self._lost)
        start = time.monotonic()
        deadline = start + self._seconds if deadline is None else deadline
        delays = backoff_delays()
        for attempt in itertools.count(1):
            index, floor = self._current, self._revision
            seconds = min(_ATTEMPT_SECONDS, max(0.05, deadline - time.monotonic()))
            try:
                reply: dict[str, Any] = self._authorized(self._urls[index], path, body, seconds)
            except _Transient as e:
                self._current = (index + 1) % len(self._urls)
                if once:
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreConnectionError(
                        f"etcd at {self.where} did not answer within "
                        f"{max(deadline - start, 0):.3g} s: {e}"
                    ) from None
                if attempt % len(self._urls) == 0:  # every member tried: wait a little
                    time.sleep(min(next(delays), remaining))
                continue
            self._observe(reply.get("header"), floor)
            return reply
        raise AssertionError("unreachable")

    def _observe(self, header: dict[str, Any] | None, floor: int) -> None:
        """Check a reply against what this client saw before sending it."""
        if not header:
            return
        cluster, revision = header.get("cluster_id"), int(header.get("revision", 0))
        if cluster is not None and self._cluster is not None and cluster != self._cluster:
            self._lose(f"a different etcd cluster answers now (cluster id {cluster}, was "
                       f"{self._cluster})")  # fmt: skip
        if revision and revision < floor:
            self._lose(f"its revision went back from {floor} to {revision} (wiped, or "
                       "restored from an older backup)")  # fmt: skip
        self._cluster = self._cluster or cluster
        self._revision = max(self._revision, revision)

    def _lose(self, reason: str) -> None:
        self._lost = (
            f"etcd at {self.where} lost the data this store held: {reason}. The run's keys are "
            "gone or older than what its nodes saw; start the run again."
        )
        raise StoreDataLostError(self._lost)

    def _k(self, key: str) -> bytes:
        return self._prefix + check_key(key).encode()

    def _put(self, key: bytes, value: bytes) -> dict[str, Any]:
        request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if self._lease:
            request["lease"] = self._lease
        return {"request_put": request}

    def _txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]],
        deadline: float | None = None,
    ) -> dict[str, Any]:
        body = {"compare": compare, "success": success, "failure": failure}
        return self._post("/kv/txn", body, deadline)

    def _ranges(self, keys: list[bytes], count_only: bool) -> list[list[dict[str, Any]]]:
        """Each key's kvs, all read at one revision (in chunks of etcd's txn limit)."""
        out: list[list[dict[str, Any]]] = []
        revision: str | None = None
        for start in range(0, len(keys), _TXN_OPS):
            ops = []
            for key in keys[start : start + _TXN_OPS]:
                request: dict[str, Any] = {"key": _b64(key), "count_only": count_only}
                if revision is not None:
                    request["revision"] = revision
                ops.append({"request_range": request})
            reply = self._txn([], ops, [])
            revision = revision or reply["header"]["revision"]
            for response in reply.get("responses", []):
                found = response["response_range"]
                if count_only:
                    out.append([{}] if int(found.get("count", "0")) else [])
                else:
                    out.append(found.get("kvs") or [])
        return out

    def _range(
        self, key: bytes, deadline: float | None = None
    ) -> tuple[dict[str, Any] | None, int]:
        """The key's kv (None if absent) and the store revision of the read."""
        reply = self._post("/kv/range", {"key": _b64(key)}, deadline)
        kvs = reply.get("kvs") or []
        return (kvs[0] if kvs else None), int(reply["header"]["revision"])

    # -- exactly-once writes ---------------------------------------------------------------

    def _operations(self) -> _Operations:
        ops = self._ops
        if not ops.key:
            ops.key = self._op_prefix + str(next(self._threads)).encode()
        return ops

    def _apply_once(
        self, condition: list[dict[str, Any]], raw: bytes, write: dict[str, Any], deadline: float
    ) -> tuple[dict[str, Any] | None, bool]:
        """Apply ``write`` (a put or a delete of ``raw``) if ``condition`` holds, exactly once
        through failures.

        Each attempt also writes its operation id to this thread's operation key, compared
        on the revision this thread last saw there. An attempt whose reply is lost is
        settled by :meth:`_fence` before the next one: either it applied, or it never can.
        Returns (the key's kv after a failed condition, whether this call's write applied).
        """
        ops = self._operations()
        ours: set[str] = set()
        delays = backoff_delays()
        while True:
            op = str(next(self._op_ids))
            known = ops.revision
            compare = [*condition, _mod_is(ops.key, known)]
            success = [write, self._put(ops.key, op.encode())]
            body = {"compare": compare, "success": success, "failure": [_get(raw), _get(ops.key)]}
            try:
                reply = self._post("/kv/txn", body, deadline, once=True)
            except _Transient as e:
                ours.add(op)
                if self._fence(ops, ours, deadline):
                    return None, True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreConnectionError(
                        f"etcd at {self.where} did not apply a write before the deadline: {e}"
                    ) from None
                time.sleep(min(next(delays), remaining))
                continue  # fenced: no attempt of ours applied, and none can now
            if reply.get("succeeded", False):
                ops.revision = reply["header"]["revision"]
                return None, True
            responses = reply["responses"]
            kv, record = _kv(responses[0]), _kv(responses[1])
            ops.revision = record["mod_revision"] if record else "0"
            if ops.revision == known:
                return kv, False  # the condition failed

    def _fence(self, ops: _Operations, ours: set[str], deadline: float) -> bool:
        """Settle attempts whose replies were lost: True when one of ``ours`` applied.
        Otherwise rewrite the operation key (compared on the revision those attempts
        compare), so that none of them can apply later, even one a failover delays, and
        return False. Resending the fence is safe: it applies at most once."""
        fence = f"fence.{next(self._op_ids)}"
        body = {
            "compare": [_mod_is(ops.key, ops.revision)],
            "success": [self._put(ops.key, fence.encode())],
            "failure": [_get(ops.key)],
        }
        reply = self._post("/kv/txn", body, deadline)
        if reply.get("succeeded", False):
            ops.revision = reply["header"]["revision"]
            return False
        record = _kv(reply["responses"][0])
        ops.revision = record["mod_revision"] if record else "0"
        return record is not None and _unb64(record.get("value")).decode() in ours

    # -- leases ----------------------------------------------------------------------------

    def _shared_lease(self, ttl: int) -> str:
        """The lease every client of this prefix shares (granted by the first one)."""
        key = b"/rdzv-lease" + self._prefix
        while True:
            kv, _ = self._range(key)
            if kv is not None:
                lease = _unb64(kv.get("value")).decode()
                alive = self._post("/lease/timetolive", {"ID": lease})
                if int(alive.get("TTL", "0")) >= 0:  # -1: expired (0 is omitted from JSON)
                    return lease
            granted = self._post("/lease/grant", {"TTL": ttl})["ID"]
            put = {
                "request_put": {
                    "key": _b64(key),
                    "value": _b64(str(granted).encode()),
                    "lease": granted,
                }
            }
            compare = [_mod_is(key, kv["mod_revision"] if kv else 0)]
            if self._txn(compare, [put], []).get("succeeded", False):
                return str(granted)
            self._post("/lease/revoke", {"ID": granted})

    def _refresh_lease(self, ttl: int) -> None:
        period = max(0.3, ttl / 3)
        while not self._stop.wait(period):
            try:
                self._post("/lease/keepalive", {"ID": self._lease}, time.monotonic() + period)
            except StoreError:
                continue  # etcd away for a moment: the next refresh may still make it

    # -- blocking reads --------------------------------------------------------------------

    def _watch_once(
        self, key: bytes, start: int, seconds: float, range_end: bytes | None = None
    ) -> dict[str, Any] | None:
        """The first event on ``key`` (or on the range up to ``range_end``) from revision
        ``start`` within ``seconds``; None when none came, or when the watch failed (the
        caller's next read fails over)."""
        index = self._current
        request = {"key": _b64(key), "start_revision": str(start)}
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        body = {"create_request": request}
        try:
            with self._session.post(
                f"{self._urls[index]}/v3/watch",
                json=body,
                stream=True,
                timeout=(min(seconds, _ATTEMPT_SECONDS), seconds),
            ) as response:
                if response.status_code != 200:
                    return None
                for line in response.iter_lines():
                    if not line:
                        continue
                    result = json.loads(line).get("result") or {}
                    if result.get("canceled"):
                        return None  # e.g. compacted: the caller reads the key again
                    for event in result.get("events") or []:
                        return dict(event)
        except requests.RequestException as e:
            if not isinstance(e, requests.ReadTimeout) and "timed out" not in str(e):
                self._current = (index + 1) % len(self._urls)
        except ValueError:
            pass
        return None

    def _wait_for(self, key: bytes, deadline: float) -> bytes | None:
        """The key's value once it exists; None if ``deadline`` passed first."""
        kv, revision = self._range(key)
        while kv is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event = self._watch_once(key, revision + 1, min(remaining, _PROBE_SECONDS))
            if event is None:
                kv, revision = self._range(key)  # also a health check of etcd
                continue
            if event.get("type") != "DELETE":
                return _unb64(event["kv"].get("value"))
            revision = int(event["kv"]["mod_revision"])
        return _unb64(kv.get("value"))

    def _wait_all(self, keys: list[bytes], names: Sequence[str], timeout: timedelta) -> None:
        deadline = time.monotonic() + timeout.total_seconds()
        while True:
            missing = [k for k, present in zip(keys, self._exist(keys)) if not present]
            if not missing:
                return
            if self._wait_for(missing[0], deadline) is None:
                raise timeout_error(names, timeout)

    def _exist(self, keys: list[bytes]) -> list[bool]:
        return [bool(found) for found in self._ranges(keys, count_only=True)]

    # -- the store contract ----------------------------------------------------------------

    def set(self, key: str, value: Value) -> None:
        self._post("/kv/put", self._put(self._k(key), to_bytes(value))["request_put"])

    def get(self, key: str) -> bytes:
        value = self._wait_for(self._k(key), time.monotonic() + self.timeout.total_seconds())
        if value is None:
            raise timeout_error([key], self.timeout)
        return value

    def add(self, key: str, amount: int) -> int:
        raw = self._k(key)
        deadline = time.monotonic() + self._seconds
        kv, _ = self._range(raw, deadline)
        while True:
            result = add_to_value(key, _unb64(kv.get("value")) if kv else None, amount)
            condition = [_mod_is(raw, kv["mod_revision"] if kv else 0)]
            write = self._put(raw, str(result).encode())
            kv, applied = self._apply_once(condition, raw, write, deadline)
            if applied:
                return result

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        raw, want, new = self._k(key), to_bytes(expected), to_bytes(desired)
        deadline = time.monotonic() + self._seconds
        if want:
            condition = [
                {"key": _b64(raw), "target": "VALUE", "result": "EQUAL", "value": _b64(want)}
            ]
        else:  # "" matches a missing key (create) or an empty value
            condition = [
                {"key": _b64(raw), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ]
        while True:
            kv, applied = self._apply_once(condition, raw, self._put(raw, new), deadline)
            if applied:
                return new
            if kv is None:
                if want:
                    return want
                condition = [
                    {
                        "key": _b64(raw),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0",
                    }
                ]
                continue
            current = _unb64(kv.get("value"))
            if current == b"" and not want:
                condition = [_mod_is(raw, kv["mod_revision"])]  # an empty value matches ""
                continue
            if current != want:
                return current

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        names = check_keys(keys)
        self._wait_all([self._k(k) for k in names], names, as_timeout(timeout, self.timeout))

    def check(self, keys: Sequence[str]) -> bool:
        return all(self._exist([self._k(k) for k in check_keys(keys)]))

    def delete_key(self, key: str) -> bool:
        raw = self._k(key)
        deadline = time.monotonic() + self._seconds
        exists = {"key": _b64(raw), "target": "CREATE", "result": "GREATER", "create_revision": "0"}
        delete = {"request_delete_range": {"key": _b64(raw)}}
        while True:  # "did it delete?" survives a retry, like add and compare_set
            kv, applied = self._apply_once([exists], raw, delete, deadline)
            if applied or kv is None:
                return applied

    def num_keys(self) -> int:
        reply = self._post(
            "/kv/range",
            {
                "key": _b64(self._prefix),
                "range_end": _b64(_range_end(self._prefix)),
                "count_only": True,
            },
        )
        return int(reply.get("count", "0"))

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        names = check_keys(keys)
        raws = [self._k(k) for k in names]
        while raws:
            self._wait_all(raws, names, self.timeout)
            kvs = self._ranges(raws, count_only=False)
            if all(kvs):  # else one was deleted in between: wait again
                return [_unb64(kv[0].get("value")) for kv in kvs]
        return []

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        names, raws = check_multi_set(keys, values)
        latest = dict(zip((self._k(k) for k in names), raws))  # etcd: one write per key
        puts = [self._put(k, v) for k, v in latest.items()]
        for start in range(0, len(puts), _TXN_OPS):  # atomic up to etcd's txn size limit
            self._txn([], puts[start : start + _TXN_OPS], [])

    def append(self, key: str, value: Value) -> None:
        raw, tail = self._k(key), to_bytes(value)
        deadline = time.monotonic() + self._seconds
        kv, _ = self._range(raw, deadline)
        while True:
            current = _unb64(kv.get("value")) if kv else b""
            condition = [_mod_is(raw, kv["mod_revision"] if kv else 0)]
            kv, applied = self._apply_once(condition, raw, self._put(raw, current + tail), deadline)
            if applied:
                return

    def list_keys(self) -> list[str]:
        body = {
            "key": _b64(self._prefix),
            "range_end": _b64(_range_end(self._prefix)),
            "keys_only": True,
        }
        start = len(self._prefix)
        return [
            _unb64(kv["key"])[start:].decode()
            for kv in self._post("/kv/range", body).get("kvs") or []
        ]

    # -- queues: one key per item under the queue's prefix, in creation order -------------

    def _queue(self, key: str) -> bytes:
        name = check_key(key).encode()
        return b"/rdzv-queue" + self._prefix + str(len(name)).encode() + b":" + name + b"\x00"

    def queue_push(self, key: str, value: Value) -> None:
        item = self._queue(key) + secrets.token_hex(8).encode()
        deadline = time.monotonic() + self._seconds
        self._apply_once([], item, self._put(item, to_bytes(value)), deadline)

    def queue_len(self, key: str) -> int:
        queue = self._queue(key)
        body = {"key": _b64(queue), "range_end": _b64(_range_end(queue)), "count_only": True}
        return int(self._post("/kv/range", body).get("count", "0"))

    def _pop(self, queue: bytes) -> tuple[bytes | None, int]:
        """The oldest item of ``queue``, deleted by this call (None when empty), and the
        revision the queue was last seen empty or contended at."""
        deadline = time.monotonic() + self._seconds
        while True:
            body = {
                "key": _b64(queue),
                "range_end": _b64(_range_end(queue)),
                "limit": 1,
                "sort_order": "ASCEND",
                "sort_target": "CREATE",
            }
            reply = self._post("/kv/range", body, deadline)
            kvs = reply.get("kvs") or []
            if not kvs:
                return None, int(reply["header"]["revision"])
            head = kvs[0]
            raw = _unb64(head["key"])
            delete = {"request_delete_range": {"key": head["key"]}}
            _, applied = self._apply_once(
                [_mod_is(raw, head["mod_revision"])], raw, delete, deadline
            )
            if applied:
                return _unb64(head.get("value")), 0
            # another pop took it: read the head again

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        limit = as_timeout(timeout, self.timeout)
        deadline = time.monotonic() + limit.total_seconds()
        queue = self._queue(key)
        while True:
            item, revision = self._pop(queue)
            if item is not None:
                return item
            if not block:
                raise queue_empty_error(key)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise queue_timeout_error(key, limit)
            self._watch_once(queue, revision + 1, min(remaining, _PROBE_SECONDS), _range_end(queue))

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        if self._keepalive is not None:
            self._keepalive.join(2)
        if not self._lost:  # this client's operation keys, one per thread that wrote
            body = {"key": _b64(self._op_prefix), "range_end": _b64(_range_end(self._op_prefix))}
            try:
                self._post("/kv/deleterange", body, time.monotonic() + _ATTEMPT_SECONDS)
            except StoreError:
                pass  # best effort: they are small, and expire with the lease when there is one
        self._closed = True
        self._session.close()
