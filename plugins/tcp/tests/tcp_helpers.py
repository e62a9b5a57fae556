"""A TCP store server in a child process, raw protocol clients, and /proc readings."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

from rdzv_plugin_tcp.protocol import MAGIC, VERSION

_CHILD = """
import json, sys
from rdzv_plugin_tcp import ServerLimits, StoreServer
from rdzv_plugin_tcp.serve import _return_freed_memory_to_the_os
_return_freed_memory_to_the_os()  # as rdzv serve does
options = json.loads(sys.argv[1])
token = options.pop("auth_token", None)
server = StoreServer("127.0.0.1", 0, limits=ServerLimits(**options),
                     auth_token=token.encode() if token else None)
print(server.port, flush=True)
server.serve_forever()
"""


class Served:
    """``rdzv serve`` running as a child process."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        # stderr goes to a file: a pipe nobody reads would fill up and block the server.
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rdzv_core", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), f"unexpected: {line!r} {self.stderr()}"
        self.port = int(line.rsplit(":", 1)[1])

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


class ChildServer:
    """A :class:`StoreServer` with the given limits, serving in a child process set up
    like ``rdzv serve`` sets up its own.

    ``fd_limit`` caps the child's descriptors (soft and hard), to drive it into EMFILE.
    """

    def __init__(self, fd_limit: int | None = None, **limits: Any) -> None:
        self.log = tempfile.TemporaryFile("w+")

        def limit_fds() -> None:
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(limits)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            preexec_fn=limit_fds,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r} {self.stderr()}"
        self.port = int(line)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mib(self) -> float:
        return proc_rss_mib(self.proc.pid)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def proc_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def raw_client(port: int, handshake: bool = True, timeout: float = 5) -> socket.socket:
    """A socket to the server, past the handshake unless ``handshake`` is False."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if handshake:
        sock.sendall(frame(MAGIC + bytes([VERSION])))
        reply = read_frame(sock)
        assert reply[:4] == MAGIC, reply
    return sock


def read_frame(sock: socket.socket) -> bytes:
    """One whole reply frame's payload (blocking, with the socket's timeout)."""
    head = _exactly(sock, 4)
    return _exactly(sock, struct.unpack(">I", head)[0])


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


def closed_by_server(sock: socket.socket, within: float = 5) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (replies are skipped)."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def wait_until(check: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


class Relay:
    """A loopback TCP relay: each accepted connection is piped to ``upstream`` (which may
    be changed between connections), and any of them can be cut."""

    def __init__(self, upstream: int) -> None:
        import threading

        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.seen = bytearray()
        self._threading = threading
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            self.pairs.append((down, up))
            self._threading.Thread(target=self._pump, args=(down, up), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        import select

        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 30)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("closed")
                    self.seen += data
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            for sock in (a, b):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self, index: int) -> None:
        """Break the ``index``-th connection (both sides)."""
        for sock in self.pairs[index]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for index in range(len(self.pairs)):
            self.cut(index)


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and return once it is stopped (a frozen host: no FIN, no RST)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"

    assert wait_until(stopped, 5, 0.005), "the process did not stop"


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
