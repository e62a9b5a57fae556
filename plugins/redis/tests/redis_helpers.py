"""Real redis-server processes for the tests: plain, with an ACL user, with TLS."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from rdzv_plugin_redis import RedisStore

from rdzv_core.testing.tls import TLSFiles, make_tls_files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server child process on 127.0.0.1, data in a temporary directory."""

    port: int
    proc: subprocess.Popen[bytes]
    data: str
    tls: TLSFiles | None = None
    client: dict[str, object] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.data, ignore_errors=True)


def start_redis(*, password: str | None = None, tls: bool = False) -> RedisServer:
    """Start redis-server; with ``password``, an ACL user ``rdzv`` needs it (and the
    default user is off); with ``tls``, only a TLS port is open."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make servers installs it)"
    data = tempfile.mkdtemp(prefix="rdzv-redis-")
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--dir", data, "--save", "", "--appendonly", "no"]
    client: dict[str, object] = {}
    files = None
    if tls:
        files = make_tls_files(data)
        args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", files.server_cert,
                 "--tls-key-file", files.server_key, "--tls-ca-cert-file", files.ca,
                 "--tls-auth-clients", "optional"]  # fmt: skip
        client.update(ssl=True, ssl_ca_certs=files.ca)
    else:
        args += ["--port", str(port)]
    if password:
        args += ["--user", "default", "off"]
        args += ["--user", "rdzv", "on", f">{password}", "~*", "&*", "+@all"]
        client.update(username="rdzv", password=password)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, proc, data, files, client)
    probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, **client)  # type: ignore[arg-type]
    deadline = time.monotonic() + 20
    while True:
        try:
            probe.ping()
            break
        except redis.exceptions.RedisError:
            if time.monotonic() > deadline or proc.poll() is not None:
                server.stop()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    probe.close()
    return server


def open_store(port: int, prefix: str, **client: object) -> RedisStore:
    return RedisStore(
        host="127.0.0.1", port=port, prefix=prefix, timeout=timedelta(seconds=60), **client
    )


def factory(server: RedisServer) -> functools.partial[RedisStore]:
    """A picklable opener of clients of one fresh prefix on ``server``."""
    return functools.partial(
        open_store, server.port, f"t/{uuid.uuid4().hex[:10]}/", **server.client
    )
