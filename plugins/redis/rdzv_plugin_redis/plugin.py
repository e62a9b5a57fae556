"""The rdzv plugin object of the ``redis`` store type (entry point ``rdzv: redis``).

Kept cheap to import: redis-py loads inside ``create_store``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdzv_core import Capability, RendezvousParameters, StoreType, hookimpl, parse_endpoint
from rdzv_core.storekit import read_timeout, readable_file, split_url

if TYPE_CHECKING:
    from .store import RedisStore

DEFAULT_PORT = 6379
SENTINEL_PORT = 26379
PASSWORD_ENV = "RDZV_REDIS_PASSWORD"
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CAPABILITIES = frozenset(
    {
        Capability.CROSS_PROCESS,
        Capability.CROSS_HOST,
        Capability.DELETE,
        Capability.PERSISTENT,
        Capability.APPEND,
        Capability.LIST_KEYS,
        Capability.QUEUES,
    }
)
OPTIONS = {
    "db": "database number (default 0, or the URL's)",
    "username": "ACL user name",
    "password_file": f"file holding the password (or ${PASSWORD_ENV})",
    "prefix": "key prefix for this run (default rdzv/<run_id>/); jobs sharing a Redis differ",
    "tls_ca": "CA certificate file (turns TLS on, like a rediss:// endpoint)",
    "tls_cert": "client certificate file (TLS)",
    "tls_key": "client key file (TLS)",
    "persistent": "true when the server keeps data across restarts (AOF/RDB)",
    "sync_replicas": "replicas that must hold a write before it returns (Redis WAIT)",
    "sentinel_username": "ACL user name for the Sentinels (redis+sentinel:// endpoints)",
    "sentinel_password_file": "file holding the Sentinels' password",
}


def _password(params: RendezvousParameters, option: str = "password_file") -> str | None:
    path = params.get(option)
    if path:
        try:
            secret = Path(str(path)).read_text().strip()
        except OSError as e:
            raise ValueError(f"Cannot read the Redis password file {path!r}: {e.strerror}.") from e
        if not secret:
            raise ValueError(f"The Redis password file {path!r} is empty.")
        return secret
    if option != "password_file":
        return None
    return os.environ.get(PASSWORD_ENV) or None


_TLS_FILES = {
    "tls_ca": "CA certificate file",
    "tls_cert": "client certificate file",
    "tls_key": "client key file",
}


def _members(endpoint: str, text: str, default_port: int, what: str) -> list[tuple[str, int]]:
    """The ``host[:port]`` members of a comma-separated list, each checked."""
    members: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ValueError(
                f"The Redis endpoint {endpoint!r} has an empty {what}: separate them with "
                "single commas."
            )
        if "@" in part:
            raise ValueError(
                f"The Redis endpoint {endpoint!r} carries credentials: give them with the "
                "username and password_file options (sentinel_username and "
                "sentinel_password_file for the Sentinels), never in the endpoint."
            )
        try:
            members.append(parse_endpoint(part, default_port))
        except ValueError as e:
            raise ValueError(f"The Redis endpoint {endpoint!r} has a bad {what}: {e}") from e
    return list(dict.fromkeys(members))


def _engine_options(endpoint: str, scheme: str, rest: str) -> dict[str, Any]:
    """``sentinels``/``service`` (and a db) or ``cluster_nodes`` from a redis+sentinel:// or
    redis+cluster:// endpoint."""
    hosts, _, path = rest.partition("/")
    if scheme in CLUSTER_SCHEMES:
        if path.strip("/"):
            raise ValueError(
                f"The Redis Cluster endpoint {endpoint!r} must list nodes only "
                "(redis+cluster://host:port,host:port): a Cluster has only database 0."
            )
        return {"cluster_nodes": _members(endpoint, hosts, DEFAULT_PORT, "cluster node")}
    service, _, db = path.partition("/")
    if not service:
        raise ValueError(
            f"The Redis Sentinel endpoint {endpoint!r} must name the service the Sentinels "
            "watch: redis+sentinel://sentinel0:26379,sentinel1:26379/mymaster[/db]."
        )
    options: dict[str, Any] = {
        "sentinels": _members(endpoint, hosts, SENTINEL_PORT, "Sentinel"),
        "service": service,
    }
    if db:
        if not db.isdigit():
            raise ValueError(f"The database in the Redis endpoint {endpoint!r} must be a number.")
        options["db"] = int(db)
    return options


def client_options(params: RendezvousParameters) -> dict[str, Any]:
    """RedisStore options for ``params``: ``url`` for a URL endpoint, ``sentinels`` and
    ``service`` for a Sentinel one, ``cluster_nodes`` for a Cluster one, else host and port."""
    endpoint = params.endpoint.strip()
    options: dict[str, Any] = {}
    scheme, _, rest = endpoint.partition("://")
    tls_scheme = False
    if rest and scheme in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
        options.update(_engine_options(endpoint, scheme, rest))
        tls_scheme = scheme.startswith("rediss")
    elif "://" in endpoint:
        url = split_url(endpoint, "Redis")
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"The Redis endpoint {endpoint!r} must be host[:port], a redis://, rediss:// "
                "or unix:// URL, redis+sentinel://sentinels/service or "
                "redis+cluster://nodes."
            )
        if url.scheme == "unix" and not url.path:
            raise ValueError(
                f"The Redis endpoint {endpoint!r} must name the socket: unix:///path/to/redis.sock."
            )
        options["url"] = endpoint
    else:
        host, port = parse_endpoint(endpoint, DEFAULT_PORT)
        options.update(host=host, port=port)
    db = params.get_as_int("db")
    if db is not None:
        if db < 0:
            raise ValueError(f"The Redis db must be 0 or more, got {db}.")
        if "cluster_nodes" in options and db:
            raise ValueError("A Redis Cluster has only database 0.")
        options["db"] = db
    if params.get("username"):
        options["username"] = str(params.get("username"))
    password = _password(params)
    if password:
        options["password"] = password
    tls = {k: path for k, what in _TLS_FILES.items() if (path := readable_file(params, k, what))}
    if tls or tls_scheme:
        if "url" not in options:
            options["ssl"] = True
        options.update(
            ssl_ca_certs=tls.get("tls_ca"),
            ssl_certfile=tls.get("tls_cert"),
            ssl_keyfile=tls.get("tls_key"),
        )
    if "sentinels" in options:
        sentinel: dict[str, Any] = {}
        if params.get("sentinel_username"):
            sentinel["username"] = str(params.get("sentinel_username"))
        secret = _password(params, "sentinel_password_file")
        if secret:
            sentinel["password"] = secret
        for key in ("ssl", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if key in options:
                sentinel[key] = options[key]
        options["sentinel_options"] = sentinel
    return options


def create_store(params: RendezvousParameters) -> RedisStore:
    """The redis store for ``params``; keys under config ``prefix`` (default ``rdzv/<run_id>/``)."""
    from .store import RedisStore

    persistent = params.get_as_bool("persistent") or False
    sync_replicas = params.get_as_int("sync_replicas") or 0
    prefix = str(params.get("prefix") or f"rdzv/{params.run_id}/")
    return RedisStore(
        prefix=prefix,
        timeout=read_timeout(params),
        persistent=persistent,
        sync_replicas=sync_replicas,
        **client_options(params),
    )


@hookimpl
def rdzv_store_type() -> StoreType:
    return StoreType(
        name="redis",
        description="Keys on a Redis server (atomic scripts, pub/sub wake-ups, ACL, TLS).",
        create_store=create_store,
        default_read_timeout=60,
        capabilities=CAPABILITIES,
        options=OPTIONS,
    )
