"""EtcdStore: the store contract over etcd's v3 API, through etcd3gw's JSON gateway client.

Every key lives under ``prefix``. ``add`` and ``compare_set`` are single transactions
(compared on value, creation or modification revision); ``multi_get``/``multi_set`` are one
transaction each. A blocking read ranges the key and, if it is missing, watches it from the
range's revision + 1, so a write between the two is never missed. The watch is renewed every
second with a range read in between, which notices a dead etcd within about a second.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import requests
from etcd3gw import client as etcd_client
from etcd3gw import exceptions as etcd_errors

from rdzv_core import Capability, Store, StoreConnectionError, StoreError
from rdzv_core.params import MAX_SECONDS
from rdzv_core.storekit import (
    Value,
    add_to_value,
    as_timeout,
    check_key,
    check_keys,
    check_multi_set,
    timeout_error,
    to_bytes,
)

__all__ = ["EtcdAuthenticationError", "EtcdStore"]

_PROBE_SECONDS = 1.0  # how often a blocked read re-checks the key and etcd's health
_TXN_OPS = 128  # etcd's default --max-txn-ops


class EtcdAuthenticationError(StoreError):
    """etcd rejected the credentials, or demands credentials that were not given."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b"\x00"


class EtcdStore(Store):
    """A store on an etcd v3 cluster at ``host:port``; every key lives under ``prefix``.

    ``ttl`` (seconds) attaches every key to a lease shared by every client of the prefix and
    refreshed by each of them, so a run's keys vanish ``ttl`` after its last client goes.
    ``user``/``password`` authenticate; ``protocol="https"`` with ``ca_cert`` (and
    ``cert``/``key`` for client certificates) speaks TLS. The constructor retries until
    ``timeout`` for etcd to answer, then raises StoreConnectionError.
    """

    def __init__(
        self,
        host: str,
        port: int = 2379,
        *,
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
        self.host, self.port, self.prefix = host, port, prefix
        self.where = f"{protocol}://{host}:{port}"
        self._prefix = prefix.encode()
        session = requests.Session()
        session.trust_env = False  # no proxy or netrc lookups on every request
        if ca_cert:  # etcd3gw applies these only to a session it makes itself
            session.verify = ca_cert
        if cert and key:
            session.cert = (cert, key)
        self._client = etcd_client(
            host=host,
            port=port,
            protocol=protocol,
            ca_cert=ca_cert,
            cert_key=key,
            cert_cert=cert,
            timeout=max(1.0, self.timeout.total_seconds()),
            api_path="/v3/",
            session=session,
        )
        self._credentials = (user, password) if user and password else None
        self._closed = False
        self._lease: str | None = None
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._connect()
        # Keys under a lease vanish after the last client: leases, not persistence.
        self.capabilities = frozenset(  # type: ignore[misc]
            {Capability.CROSS_PROCESS, Capability.CROSS_HOST, Capability.DELETE}
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

    def _connect(self) -> None:
        deadline = time.monotonic() + self.timeout.total_seconds()
        delay = 0.05
        while True:
            try:
                if self._credentials:
                    self._authenticate()
                self._post("/kv/range", {"key": _b64(self._prefix), "count_only": True})
                return
            except StoreConnectionError as e:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreConnectionError(
                        f"Could not reach etcd at {self.where} within "
                        f"{self.timeout.total_seconds():g} s: {e}"
                    ) from e
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)

    def _authenticate(self) -> None:
        assert self._credentials is not None
        user, password = self._credentials
        self._client.session.headers.pop("Authorization", None)
        try:
            reply = self._raw_post("/auth/authenticate", {"name": user, "password": password})
        except StoreError as e:
            raise EtcdAuthenticationError(
                f"etcd at {self.where} rejected the credentials of user {user!r}: {e}"
            ) from e
        self._client.session.headers["Authorization"] = reply["token"]

    def _raw_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise StoreError("This EtcdStore is closed.")
        try:
            reply: dict[str, Any] = self._client.post(self._client.get_url(path), json=body)
            return reply
        except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError) as e:
            raise StoreConnectionError(
                f"etcd at {self.where} did not answer: {e.detail_text or type(e).__name__}"
            ) from e
        except requests.RequestException as e:
            raise StoreConnectionError(f"etcd at {self.where} did not answer: {e}") from e
        except etcd_errors.Etcd3Exception as e:
            raise StoreError(f"etcd at {self.where} refused {path}: {e.detail_text}") from e

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._raw_post(path, body)
        except StoreError as e:
            text = str(e)
            if self._credentials and "invalid auth token" in text:
                self._authenticate()  # the token expired: log in again, once
                return self._raw_post(path, body)
            if "user name is empty" in text or "permission denied" in text:
                raise EtcdAuthenticationError(
                    f"etcd at {self.where} requires authentication (config 'user' and "
                    f"'password') or denied access: {text}"
                ) from e
            raise

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
    ) -> dict[str, Any]:
        return self._post("/kv/txn", {"compare": compare, "success": success, "failure": failure})

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

    def _range(self, key: bytes) -> tuple[dict[str, Any] | None, int]:
        """The key's kv (None if absent) and the store revision of the read."""
        reply = self._post("/kv/range", {"key": _b64(key)})
        kvs = reply.get("kvs") or []
        return (kvs[0] if kvs else None), int(reply["header"]["revision"])

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
            compare = [
                {
                    "key": _b64(key),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": kv["mod_revision"] if kv else "0",
                }
            ]
            put = {
                "request_put": {
                    "key": _b64(key),
                    "value": _b64(str(granted).encode()),
                    "lease": granted,
                }
            }
            if self._txn(compare, [put], []).get("succeeded", False):
                return str(granted)
            self._post("/lease/revoke", {"ID": granted})

    def _refresh_lease(self, ttl: int) -> None:
        while not self._stop.wait(max(0.3, ttl / 3)):
            try:
                self._post("/lease/keepalive", {"ID": self._lease})
            except StoreError:
                continue  # etcd away for a moment: the next refresh may still make it

    # -- blocking reads --------------------------------------------------------------------

    def _wait_for(self, key: bytes, deadline: float) -> bytes | None:
        """The key's value once it exists; None if ``deadline`` passed first."""
        kv, revision = self._range(key)
        while kv is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                event = self._client.watch_once(
                    key, timeout=min(remaining, _PROBE_SECONDS), start_revision=revision + 1
                )
            except etcd_errors.WatchTimedOut:
                kv, _ = self._range(key)  # the read doubles as a health check of etcd
                continue
            except (etcd_errors.Etcd3Exception, requests.RequestException) as e:
                raise StoreConnectionError(f"Watching etcd at {self.where} failed: {e}") from e
            if event.get("type") != "DELETE":
                return bytes(event["kv"].get("value", b""))
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
        self._txn([], [self._put(self._k(key), to_bytes(value))], [])

    def get(self, key: str) -> bytes:
        value = self._wait_for(self._k(key), time.monotonic() + self.timeout.total_seconds())
        if value is None:
            raise timeout_error([key], self.timeout)
        return value

    def add(self, key: str, amount: int) -> int:
        raw = self._k(key)
        kv, _ = self._range(raw)
        while True:
            current = _unb64(kv.get("value")) if kv else None
            result = add_to_value(key, current, amount)
            compare = [
                {
                    "key": _b64(raw),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": kv["mod_revision"] if kv else "0",
                }
            ]
            reply = self._txn(
                compare,
                [self._put(raw, str(result).encode())],
                [{"request_range": {"key": _b64(raw)}}],
            )
            if reply.get("succeeded", False):
                return result
            kvs = reply["responses"][0]["response_range"].get("kvs") or []
            kv = kvs[0] if kvs else None

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        raw, want, new = self._k(key), to_bytes(expected), to_bytes(desired)
        if want:
            compare = [
                {"key": _b64(raw), "target": "VALUE", "result": "EQUAL", "value": _b64(want)}
            ]
        else:  # "" matches a missing key (create) or an empty value
            compare = [
                {"key": _b64(raw), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ]
        reply = self._txn(compare, [self._put(raw, new)], [{"request_range": {"key": _b64(raw)}}])
        if reply.get("succeeded", False):
            return new
        kvs = reply["responses"][0]["response_range"].get("kvs") or []
        if not kvs:
            return want
        current = _unb64(kvs[0].get("value"))
        if current == b"" and not want:
            compare = [
                {
                    "key": _b64(raw),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": kvs[0]["mod_revision"],
                }
            ]
            if self._txn(compare, [self._put(raw, new)], []).get("succeeded", False):
                return new
            return self.compare_set(key, expected, desired)
        return current

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        names = check_keys(keys)
        self._wait_all([self._k(k) for k in names], names, as_timeout(timeout, self.timeout))

    def check(self, keys: Sequence[str]) -> bool:
        return all(self._exist([self._k(k) for k in check_keys(keys)]))

    def delete_key(self, key: str) -> bool:
        reply = self._post("/kv/deleterange", {"key": _b64(self._k(key))})
        return int(reply.get("deleted", "0")) > 0

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

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        if self._keepalive is not None:
            self._keepalive.join(2)
        self._closed = True
        self._client.session.close()
