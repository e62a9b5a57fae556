"""Run a throwaway etcd as a child process (for tests and benchmarks).

Needs an ``etcd`` binary: ``$ETCD_BIN``, or ``etcd`` on PATH (Debian: ``etcd-server``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass

__all__ = ["Etcd", "free_port", "start_etcd"]


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


def start_etcd(timeout: float = 30.0) -> Etcd:
    """A new etcd on free loopback ports, healthy (fast election: ready in ~0.05 s)."""
    binary = os.environ.get("ETCD_BIN") or shutil.which("etcd")
    if not binary:
        raise RuntimeError("no etcd binary: install Debian's etcd-server or set ETCD_BIN")
    client, peer = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="rdzv-etcd-")
    proc = subprocess.Popen(
        [binary, "--name", "n1", "--data-dir", data,
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"n1=http://127.0.0.1:{peer}", "--initial-cluster-state", "new",
         "--heartbeat-interval", "10", "--election-timeout", "100",
         "--logger", "zap", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    etcd = Etcd(proc, client, data)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1) as r:
                if json.load(r).get("health") == "true":
                    return etcd
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    etcd.stop()
    raise RuntimeError(f"etcd did not become healthy within {timeout} s")
