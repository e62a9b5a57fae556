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

from rdzv_core.testing.tls import TLSFiles, make_tls_files

__all__ = ["Etcd", "TLSFiles", "free_port", "make_tls_files", "start_etcd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
