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
PASSWORD_ENV = "RDZV_REDIS_PASSWORD"
CAPABILITIES = frozenset(
    {Capability.CROSS_PROCESS, Capability.CROSS_HOST, Capability.DELETE, Capability.PERSISTENT}
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
}


def _password(params: RendezvousParameters) -> str | None:
    path = params.get("password_file")
    if path:
        try:
            secret = Path(str(path)).read_text().strip()
        except OSError as e:
            raise ValueError(f"Cannot read the Redis password file {path!r}: {e.strerror}.") from e
        if not secret:
            raise ValueError(f"The Redis password file {path!r} is empty.")
        return secret
    return os.environ.get(PASSWORD_ENV) or None


_TLS_FILES = {
    "tls_ca": "CA certificate file",
    "tls_cert": "client certificate file",
    "tls_key": "client key file",
}


def client_options(params: RendezvousParameters) -> dict[str, Any]:
    """redis-py options for ``params``: ``url`` for a URL endpoint, else host and port."""
    endpoint = params.endpoint.strip()
    options: dict[str, Any] = {}
    if "://" in endpoint:
        url = split_url(endpoint, "Redis")
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"The Redis endpoint {endpoint!r} must be host[:port] or a redis://, rediss:// "
                "or unix:// URL."
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
        options["db"] = db
    if params.get("username"):
        options["username"] = str(params.get("username"))
    password = _password(params)
    if password:
        options["password"] = password
    tls = {k: path for k, what in _TLS_FILES.items() if (path := readable_file(params, k, what))}
    if tls:
        if "url" not in options:
            options["ssl"] = True
        options.update(
            ssl_ca_certs=tls.get("tls_ca"),
            ssl_certfile=tls.get("tls_cert"),
            ssl_keyfile=tls.get("tls_key"),
        )
    return options


def create_store(params: RendezvousParameters) -> RedisStore:
    """The redis store for ``params``; keys under config ``prefix`` (default ``rdzv/<run_id>/``)."""
    from .store import RedisStore

    persistent = params.get_as_bool("persistent") or False
    prefix = str(params.get("prefix") or f"rdzv/{params.run_id}/")
    return RedisStore(
        prefix=prefix, timeout=read_timeout(params), persistent=persistent, **client_options(params)
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
