"""The rdzv plugin object of the ``etcd`` store type (entry point ``rdzv: etcd``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import rdzv_plugin_etcd
from rdzv_core import (
    Capability,
    RendezvousParameters,
    StoreType,
    hookimpl,
    parse_endpoint,
)
from rdzv_core.storekit import read_timeout, readable_file, split_url

if TYPE_CHECKING:
    from .store import EtcdStore

DEFAULT_READ_TIMEOUT = 60
CAPABILITIES = frozenset(
    {
        Capability.CROSS_PROCESS,
        Capability.CROSS_HOST,
        Capability.PERSISTENT,
        Capability.DELETE,
        Capability.LEASES,
        Capability.APPEND,
        Capability.LIST_KEYS,
        Capability.QUEUES,
    }
)

OPTIONS = {
    "prefix": "key prefix for this run (default /rdzv/<run_id>/)",
    "ttl": "seconds of the lease that owns the run's keys",
    "user": "etcd user name",
    "password": "etcd password",
    "protocol": "http or https (or give a URL as the endpoint)",
    "cacert": "CA certificate file (https)",
    "cert": "client certificate file (https)",
    "key": "client key file (https)",
}


def parse_etcd_endpoint(endpoint: str, protocol: str | None) -> tuple[str, str, int]:
    """(protocol, host, port) from ``host[:port]`` or ``http(s)://host[:port]``."""
    text = endpoint.strip()
    if "://" in text:
        url = split_url(text, "etcd")
        if url.scheme not in ("http", "https"):
            raise ValueError(f"The etcd endpoint {endpoint!r} must use http or https.")
        if url.path not in ("", "/") or not url.hostname:
            raise ValueError(
                f"The etcd endpoint {endpoint!r} must be a URL with only a host "
                "and port, e.g. https://etcd0:2379."
            )
        if protocol and protocol != url.scheme:
            raise ValueError(f"The etcd endpoint {endpoint!r} contradicts protocol={protocol}.")
        port = rdzv_plugin_etcd.DEFAULT_PORT if url.port is None else url.port
        return url.scheme, url.hostname, port
    host, port = parse_endpoint(text, rdzv_plugin_etcd.DEFAULT_PORT)
    return protocol or "http", host, port


def parse_etcd_endpoints(endpoint: str, protocol: str | None) -> tuple[str, list[tuple[str, int]]]:
    """(protocol, [(host, port), ...]) from a comma-separated list of members, each
    ``host[:port]`` or ``http(s)://host[:port]``; the members must agree on the protocol."""
    parts = [part.strip() for part in endpoint.split(",")]
    if len(parts) == 1:
        scheme, host, port = parse_etcd_endpoint(parts[0], protocol)
        return scheme, [(host, port)]
    members: list[tuple[str, int]] = []
    schemes = set()
    for part in parts:
        if not part:
            raise ValueError(
                f"The etcd endpoint list {endpoint!r} has an empty member: separate the "
                "members with single commas, e.g. etcd0:2379,etcd1:2379,etcd2:2379."
            )
        try:
            scheme, host, port = parse_etcd_endpoint(part, protocol)
        except ValueError as e:
            raise ValueError(f"The etcd endpoint list {endpoint!r} has a bad member: {e}") from e
        if "://" in part or protocol:
            schemes.add(scheme)
        members.append((host, port))
    if len(schemes) > 1:
        raise ValueError(
            f"The members of the etcd endpoint list {endpoint!r} mix http and https; "
            "one cluster speaks one protocol."
        )
    return (schemes.pop() if schemes else "http"), list(dict.fromkeys(members))


def create_store(params: RendezvousParameters) -> EtcdStore:
    """The etcd store for ``params``; keys go under config ``prefix`` (default
    ``/rdzv/<run_id>/``)."""
    from .store import EtcdStore

    timeout = read_timeout(params)
    protocol, members = parse_etcd_endpoints(params.endpoint, params.get("protocol"))
    prefix = params.get("prefix") or f"/rdzv/{params.run_id}/"
    (host, port), *others = members
    return EtcdStore(
        host,
        port,
        members=others,
        prefix=prefix,
        timeout=timeout,
        ttl=params.get_as_int("ttl"),
        user=params.get("user"),
        password=params.get("password"),
        protocol=protocol,
        ca_cert=readable_file(params, "cacert", "CA certificate file"),
        cert=readable_file(params, "cert", "client certificate file"),
        key=readable_file(params, "key", "client key file"),
    )


@hookimpl
def rdzv_store_type() -> StoreType:
    return StoreType(
        name="etcd",
        description="Keys on an etcd v3 cluster (watch-based waits, transactions, leases).",
        create_store=create_store,
        default_read_timeout=DEFAULT_READ_TIMEOUT,
        capabilities=CAPABILITIES,
        options=OPTIONS,
    )
