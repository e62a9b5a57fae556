"""Run throwaway Redis servers as child processes (for tests and benchmarks): one server
(plain, with an ACL user, or TLS), a master with a replica watched by Sentinels, or a Redis
Cluster. Needs Debian's ``redis-server`` (and ``redis-cli`` for a Cluster) on PATH."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rdzv_core.testing.children import delete_data, log_tail, port_was_taken, spawn_logged
from rdzv_core.testing.tls import TLSFiles, make_tls_files

__all__ = [
    "RedisCluster",
    "RedisServer",
    "SentinelGroup",
    "free_port",
    "start_redis",
    "start_redis_cluster",
    "start_sentinel_group",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (Debian: apt-get install redis-server)")
    return found


#: Tries with a fresh port when a server finds its port taken between choosing and binding it.
_START_ATTEMPTS = 3


def _until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout} s")
        time.sleep(0.05)


@dataclass
class RedisServer:
    """A redis-server child process on 127.0.0.1, data in a temporary directory.

    ``restart`` starts it again on the same port: without persistence it comes back empty.
    """

    port: int
    proc: subprocess.Popen[bytes]
    data: str
    tls: TLSFiles | None = None
    client: dict[str, object] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def restart(self, *extra: str) -> None:
        self.kill()
        self.proc = spawn_logged([*self.command, *extra], self.data + ".log")
        self.wait_ready()

    def stop(self) -> None:
        """Kill it, reap it and delete its data and log."""
        self.kill()
        delete_data(self.data)

    def log_tail(self, size: int = 2000) -> str:
        """The end of what it logged, kept in ``<data>.log``."""
        return log_tail(self.data + ".log", size)

    def port_taken(self) -> bool:
        """Whether it exited because another process held its port."""
        return port_was_taken(self.proc, self.data + ".log")

    def redis(self) -> redis.Redis:
        """A plain redis-py client of this server."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **self.client)  # type: ignore[arg-type]

    def wait_ready(self, timeout: float = 20.0) -> None:
        # Each ping is short and never retried: a port someone else holds may accept and
        # never answer, and the loop must see the server exit meanwhile.
        probe = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
            **self.client,  # type: ignore[arg-type]
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited: "
                    f"{self.log_tail()[-500:] or 'it logged nothing'}"
                )
            try:
                return bool(probe.ping())
            except redis.exceptions.RedisError:
                return False

        try:
            _until(ready, timeout, f"redis-server on port {self.port} did not answer")
        finally:
            probe.close()


def _spawn(
    args_for: Callable[[int], list[str]],
    data: str,
    tls: TLSFiles | None = None,
    client: dict[str, object] | None = None,
) -> RedisServer:
    """A redis-server started with ``args_for(port)`` on a free port, answering; a port
    taken between choosing and binding it is retried on a fresh one."""
    for attempt in range(_START_ATTEMPTS):
        port = free_port()
        command = [_binary("redis-server"), *args_for(port)]
        proc = spawn_logged(command, data + ".log")
        server = RedisServer(port, proc, data, tls, client or {}, command)
        try:
            server.wait_ready()
            return server
        except RuntimeError:
            if not (server.port_taken() and attempt + 1 < _START_ATTEMPTS):
                server.stop()
                raise
            server.kill()
    raise AssertionError("unreachable")


def _with_port(args: list[str], bus: bool = False) -> Callable[[int], list[str]]:
    """``args`` with ``--port`` (and, with ``bus``, a free ``--cluster-port``) added."""

    def args_for(port: int) -> list[str]:
        bus_port = ["--cluster-port", str(free_port())] if bus else []
        return [*args, "--port", str(port), *bus_port]

    return args_for


def start_redis(
    *, password: str | None = None, tls: bool = False, extra: tuple[str, ...] = ()
) -> RedisServer:
    """Start redis-server without persistence; with ``password``, an ACL user ``rdzv``
    needs it (and the default user is off); with ``tls``, only a TLS port is open."""
    data = tempfile.mkdtemp(prefix="rdzv-redis-")
    args = ["--bind", "127.0.0.1", "--dir", data, "--save", "", "--appendonly", "no"]
    client: dict[str, object] = {}
    files = make_tls_files(data) if tls else None
    if files:
        args += ["--port", "0", "--tls-cert-file", files.server_cert,
                 "--tls-key-file", files.server_key, "--tls-ca-cert-file", files.ca,
                 "--tls-auth-clients", "optional"]  # fmt: skip
        client.update(ssl=True, ssl_ca_certs=files.ca)
    if password:
        args += ["--user", "default", "off"]
        args += ["--user", "rdzv", "on", f">{password}", "~*", "&*", "+@all"]
        client.update(username="rdzv", password=password)
    listen = "--tls-port" if files else "--port"
    return _spawn(lambda port: [*args, listen, str(port), *extra], data, tls=files, client=client)


@dataclass
class SentinelGroup:
    """A master, its replica and three Sentinels (quorum 2) watching service ``service``."""

    servers: list[RedisServer]
    sentinels: list[RedisServer]
    service: str

    @property
    def endpoint(self) -> str:
        """The ``endpoint`` of a redis store that follows this group's master."""
        hosts = ",".join(s.endpoint for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def master(self, timeout: float = 30.0, *, agreed: bool = False) -> RedisServer:
        """The live master the Sentinels name now; with ``agreed``, once every live
        Sentinel names the same one."""
        found: list[RedisServer] = []

        def named() -> bool:
            named_by = set()
            for sentinel in self.sentinels:
                if not sentinel.alive():
                    continue
                try:
                    address: Any = sentinel.redis().sentinel_get_master_addr_by_name(self.service)
                    named_by.add(int(address[1]))
                except (redis.exceptions.RedisError, TypeError):
                    if agreed:
                        return False
            if len(named_by) != 1 and (agreed or not named_by):
                return False
            for server in self.servers:
                if server.port in named_by and server.alive():
                    try:
                        if server.redis().info("replication")["role"] == "master":
                            found.append(server)
                            return True
                    except redis.exceptions.RedisError:
                        pass
            return False

        _until(named, timeout, "the Sentinels named no live master")
        return found[0]

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until every other server replicates the master and has acknowledged a write
        (Redis WAIT): a replica that merely shows "online" may not stream yet."""
        others = len(self.servers) - 1

        def synced() -> bool:
            # Asked afresh each time: just after a failover, the server the Sentinels named
            # may be demoted before the write reaches it.
            try:
                client = self.master(timeout, agreed=True).redis()
                client.set("rdzv-testing:probe", str(time.monotonic()))
                return int(client.wait(others, 100)) >= others
            except redis.exceptions.RedisError:
                return False

        _until(synced, timeout, "the replicas did not acknowledge a write")

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()


def start_sentinel_group(service: str = "rdzv-test") -> SentinelGroup:
    """A master and a replica without persistence, and three Sentinels that fail over
    half a second after the master stops answering (promotion takes about 2-3 s)."""
    base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]  # fmt: skip
    servers: list[RedisServer] = []
    sentinels: list[RedisServer] = []
    try:
        for i in range(2):
            data = tempfile.mkdtemp(prefix="rdzv-redis-")
            args = [*base, "--dir", data]
            if i:
                args += ["--replicaof", "127.0.0.1", str(servers[0].port)]
            servers.append(_spawn(_with_port(args), data))
        for _ in range(3):
            data = tempfile.mkdtemp(prefix="rdzv-sentinel-")
            conf = os.path.join(data, "sentinel.conf")
            with open(conf, "w") as f:  # Sentinel rewrites its config: a file of its own
                f.write(
                    f"bind 127.0.0.1\ndir {data}\n"
                    f"sentinel monitor {service} 127.0.0.1 {servers[0].port} 2\n"
                    f"sentinel down-after-milliseconds {service} 500\n"
                    f"sentinel failover-timeout {service} 3000\n"
                )
            sentinels.append(_spawn(_with_port([conf, "--sentinel"]), data))
        group = SentinelGroup(servers, sentinels, service)
        group.wait_replicated()
        return group
    except BaseException:
        for server in [*sentinels, *servers]:
            server.stop()
        raise


@dataclass
class RedisCluster:
    """Redis Cluster masters (no replicas) on loopback."""

    nodes: list[RedisServer]

    @property
    def endpoint(self) -> str:
        return "redis+cluster://" + ",".join(n.endpoint for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(masters: int = 3, *, assign_slots: bool = True) -> RedisCluster:
    """``masters`` cluster nodes; with ``assign_slots``, all 16384 slots spread over them by
    ``redis-cli --cluster create``, else none assigned (to test a cluster missing slots)."""
    nodes: list[RedisServer] = []
    try:
        for _ in range(masters):
            data = tempfile.mkdtemp(prefix="rdzv-redis-cluster-")
            args = ["--bind", "127.0.0.1", "--dir", data, "--save", "",
                    "--appendonly", "no", "--cluster-enabled", "yes",
                    "--cluster-config-file", os.path.join(data, "nodes.conf"),
                    "--cluster-node-timeout", "2000"]  # fmt: skip
            # The bus port is a free one, not port + 10000, which may be taken.
            nodes.append(_spawn(_with_port(args, bus=True), data))
        if assign_slots:
            subprocess.run(
                [_binary("redis-cli"), "--cluster", "create",
                 *(n.endpoint for n in nodes), "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
            )  # fmt: skip

            def ok() -> bool:
                return all(n.redis().cluster("info")["cluster_state"] == "ok" for n in nodes)

            _until(ok, 30, "the cluster did not reach state ok")
        return RedisCluster(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
