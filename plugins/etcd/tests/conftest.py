"""A real etcd for the tests: started as a child process on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Etcd:
    proc: subprocess.Popen[bytes]
    port: int
    data: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def start_etcd() -> Etcd:
    binary = os.environ.get("ETCD_BIN") or shutil.which("etcd")
    assert binary, "etcd is not installed: `make test` installs Debian's etcd-server"
    client, peer = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="rdzv-etcd-")
    proc = subprocess.Popen(
        [
            binary,
            "--name",
            "n1",
            "--data-dir",
            data,
            "--listen-client-urls",
            f"http://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"n1=http://127.0.0.1:{peer}",
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "10",
            "--election-timeout",
            "100",
            "--logger",
            "zap",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    etcd = Etcd(proc, client, data)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (
                requests.get(f"http://127.0.0.1:{client}/health", timeout=1).json().get("health")
                == "true"
            ):
                return etcd
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.02)
    etcd.stop()
    raise RuntimeError("etcd did not become healthy within 30 s")


@pytest.fixture(scope="session")
def etcd() -> Iterator[Etcd]:
    server = start_etcd()
    yield server
    server.stop()


@pytest.fixture
def own_etcd() -> Iterator[Etcd]:
    """An etcd of this test's own (to kill, or to turn authentication on)."""
    server = start_etcd()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix: every test sees an empty store."""
    return f"/test/{uuid.uuid4().hex[:10]}/"
