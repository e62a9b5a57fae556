"""Run a throwaway etcd as a child process (for tests and benchmarks).

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
from dataclasses import dataclass

__all__ = ["Etcd", "TLSFiles", "free_port", "make_tls_files", "start_etcd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: a CA, a server certificate for 127.0.0.1, and a client certificate."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls_files(directory: str) -> TLSFiles:
    """Create a throwaway CA and certificates with the ``openssl`` command."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rdzv-test-ca",
        "-keyout",
        path("ca.key"),
        "-out",
        path("ca.pem"),
    )
    with open(path("san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=rdzv-{name}",
            "-keyout",
            path(f"{name}.key"),
            "-out",
            path(f"{name}.csr"),
        )
        run(
            "x509",
            "-req",
            "-in",
            path(f"{name}.csr"),
            "-CA",
            path("ca.pem"),
            "-CAkey",
            path("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            path("san.ext"),
            "-out",
            path(f"{name}.pem"),
        )
    return TLSFiles(
        path("ca.pem"),
        path("server.pem"),
        path("server.key"),
        path("client.pem"),
        path("client.key"),
    )


@dataclass
class Etcd:
    """A running single-node etcd on 127.0.0.1 with its data in a temporary directory."""

    proc: subprocess.Popen[bytes]
    port: int
    data: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Kill it (by its pid), reap it and delete its data."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def start_etcd(timeout: float = 30.0, tls: TLSFiles | None = None) -> Etcd:
    """A new etcd on free loopback ports, healthy (fast election: ready in ~0.05 s).

    With ``tls``, clients must speak HTTPS and present a certificate signed by ``tls.ca``.
    """
    binary = os.environ.get("ETCD_BIN") or shutil.which("etcd")
    if not binary:
        raise RuntimeError("no etcd binary: install Debian's etcd-server or set ETCD_BIN")
    client, peer = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="rdzv-etcd-")
    scheme = "https" if tls else "http"
    secure = []
    if tls:
        secure = [
            "--cert-file",
            tls.server_cert,
            "--key-file",
            tls.server_key,
            "--client-cert-auth",
            "--trusted-ca-file",
            tls.ca,
        ]
    proc = subprocess.Popen(
        [binary, "--name", "n1", "--data-dir", data, *secure,
         "--listen-client-urls", f"{scheme}://127.0.0.1:{client}",
         "--advertise-client-urls", f"{scheme}://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"n1=http://127.0.0.1:{peer}", "--initial-cluster-state", "new",
         "--heartbeat-interval", "10", "--election-timeout", "100",
         "--logger", "zap", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    etcd = Etcd(proc, client, data)
    deadline = time.monotonic() + timeout
    context = None
    if tls:
        context = ssl.create_default_context(cafile=tls.ca)
        context.load_cert_chain(tls.client_cert, tls.client_key)
    while time.monotonic() < deadline:
        try:
            url = f"{scheme}://127.0.0.1:{client}/health"
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                if json.load(r).get("health") == "true":
                    return etcd
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    etcd.stop()
    raise RuntimeError(f"etcd did not become healthy within {timeout} s")
