"""Run throwaway etcd servers as child processes (for tests and benchmarks): one member, or
a cluster of several whose members can be killed, restarted and wiped.

Needs an ``etcd`` binary: ``$ETCD_BIN``, or ``etcd`` on PATH (Debian: ``etcd-server``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

from rdzv_core.testing.children import delete_data, log_tail, port_was_taken, spawn_logged
from rdzv_core.testing.tls import TLSFiles, make_tls_files

__all__ = [
    "Etcd",
    "EtcdCluster",
    "TLSFiles",
    "free_port",
    "make_tls_files",
    "start_etcd",
    "start_etcd_cluster",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Tries with fresh ports when a member finds a port taken between choosing and binding it.
_START_ATTEMPTS = 3


def _binary() -> str:
    binary = os.environ.get("ETCD_BIN") or shutil.which("etcd")
    if not binary:
        raise RuntimeError("no etcd binary: install Debian's etcd-server or set ETCD_BIN")
    return binary


@dataclass
class Etcd:
    """One etcd member on 127.0.0.1 with its data in a temporary directory.

    ``command`` restarts it (``restart``) with the same data, or with none (``wipe``).
    """

    proc: subprocess.Popen[bytes]
    port: int
    data: str
    name: str = "n1"
    command: list[str] = field(default_factory=list)
    tls: TLSFiles | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL it and reap it; its data stays."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def restart(self, *, wipe: bool = False, existing: bool = True) -> None:
        """Start it again on the same ports: with its data, or (``wipe``) with none."""
        self.kill()
        if wipe:
            shutil.rmtree(self.data, ignore_errors=True)
            os.makedirs(self.data)
        command = list(self.command)
        if existing and not wipe:
            command[command.index("new")] = "existing"
        self.proc = spawn_logged(command, self.data + ".log")

    def stop(self) -> None:
        """Kill it, reap it and delete its data and log."""
        self.kill()
        delete_data(self.data)

    def log_tail(self, size: int = 2000) -> str:
        """The end of what it logged (errors only), kept in ``<data>.log``."""
        return log_tail(self.data + ".log", size)

    def port_taken(self) -> bool:
        """Whether it exited because another process held one of its ports."""
        return port_was_taken(self.proc, self.data + ".log")

    def status(self, timeout: float = 1.0) -> dict[str, object] | None:
        """etcd's maintenance status of this member (None if it does not answer)."""
        request = urllib.request.Request(
            f"{self.url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._context()) as r:
                reply: dict[str, object] = json.load(r)
                return reply
        except (OSError, ValueError):
            return None

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            url = f"{self.url}/health"
            with urllib.request.urlopen(url, timeout=timeout, context=self._context()) as r:
                return bool(json.load(r).get("health") == "true")
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd {self.name} exited with status {self.proc.returncode}: "
                    f"{self.log_tail() or 'it logged nothing'}"
                )
            if self.healthy():
                return
            time.sleep(0.02)
        raise RuntimeError(f"etcd {self.name} did not become healthy within {timeout} s")

    def _context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls.ca)
        context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context


def _member_command(
    name: str,
    data: str,
    client: int,
    peer: int,
    cluster: str,
    tls: TLSFiles | None,
    heartbeat_ms: int,
    election_ms: int,
) -> list[str]:
    scheme = "https" if tls else "http"
    secure = []
    if tls:
        secure = ["--cert-file", tls.server_cert, "--key-file", tls.server_key,
                  "--client-cert-auth", "--trusted-ca-file", tls.ca]  # fmt: skip
    return [_binary(), "--name", name, "--data-dir", data, *secure,
            "--listen-client-urls", f"{scheme}://127.0.0.1:{client}",
            "--advertise-client-urls", f"{scheme}://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--heartbeat-interval", str(heartbeat_ms), "--election-timeout", str(election_ms),
            "--logger", "zap", "--log-level", "error"]  # fmt: skip


def start_etcd(timeout: float = 30.0, tls: TLSFiles | None = None) -> Etcd:
    """A new single-member etcd on free loopback ports, healthy (fast election: ready in
    ~0.05 s). With ``tls``, clients must speak HTTPS and present a certificate signed by
    ``tls.ca``. A port taken between choosing and binding it is retried on fresh ones."""
    for attempt in range(_START_ATTEMPTS):
        client, peer = free_port(), free_port()
        data = tempfile.mkdtemp(prefix="rdzv-etcd-")
        cluster = f"n1=http://127.0.0.1:{peer}"
        command = _member_command("n1", data, client, peer, cluster, tls, 10, 100)
        etcd = Etcd(spawn_logged(command, data + ".log"), client, data, "n1", command, tls)
        try:
            etcd.wait_healthy(timeout)
            return etcd
        except RuntimeError:
            retry = etcd.port_taken() and attempt + 1 < _START_ATTEMPTS
            etcd.stop()
            if not retry:
                raise
    raise AssertionError("unreachable")


@dataclass
class EtcdCluster:
    """Several etcd members forming one cluster on loopback."""

    members: list[Etcd]
    election_ms: int

    @property
    def endpoint(self) -> str:
        """Every member, comma-separated: the ``endpoint`` of an ``etcd`` store."""
        return ",".join(m.endpoint for m in self.members)

    def leader(self, timeout: float = 30.0) -> Etcd:
        """The member that leads now (waits for an election to finish)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                if not member.alive():
                    continue
                status = member.status()
                header = status.get("header") if status else None
                if (
                    isinstance(header, dict)
                    and status
                    and header.get("member_id") == status.get("leader")
                ):
                    return member
            time.sleep(0.02)
        raise RuntimeError(f"no etcd member led within {timeout} s")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        for member in self.members:
            if member.alive():
                member.wait_healthy(timeout)
        self.leader(timeout)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def start_etcd_cluster(
    size: int = 3, *, heartbeat_ms: int = 50, election_ms: int = 500, timeout: float = 30.0
) -> EtcdCluster:
    """``size`` members on free loopback ports, healthy and with a leader. A port taken
    between choosing and binding it is retried on fresh ones."""
    for attempt in range(_START_ATTEMPTS):
        ports = [(free_port(), free_port()) for _ in range(size)]
        cluster = ",".join(f"n{i + 1}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        members = []
        for i, (client, peer) in enumerate(ports):
            name, data = f"n{i + 1}", tempfile.mkdtemp(prefix=f"rdzv-etcd-n{i + 1}-")
            command = _member_command(
                name, data, client, peer, cluster, None, heartbeat_ms, election_ms
            )
            members.append(Etcd(spawn_logged(command, data + ".log"), client, data, name, command))
        result = EtcdCluster(members, election_ms)
        try:
            for member in members:  # every one: a member that died at start is an error here
                member.wait_healthy(timeout)
            result.leader(timeout)
            return result
        except RuntimeError:
            retry = any(m.port_taken() for m in members) and attempt + 1 < _START_ATTEMPTS
            result.stop()
            if not retry:
                raise
    raise AssertionError("unreachable")
