"""The client's spin policy: busy-polling for a reply is learned from how spins end, and
reads that may wait for a key never spin."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import rdzv_plugin_tcp.client as client
from rdzv_plugin_tcp import StoreServer, TCPStore
from rdzv_plugin_tcp.client import MAX_SPIN_SKIP, SpinPolicy
from rdzv_plugin_tcp.protocol import MAGIC, SERVER_ID_SIZE, U32, VERSION


def test_each_wasted_spin_doubles_the_requests_that_skip_spinning() -> None:
    policy = SpinPolicy()
    assert policy.should_spin()
    policy.spun(False)
    assert [policy.should_spin() for _ in range(2)] == [False, True]  # skipped 1
    policy.spun(False)
    assert [policy.should_spin() for _ in range(3)] == [False, False, True]  # skipped 2
    for _ in range(40):
        policy.spun(False)
    assert policy.skip == MAX_SPIN_SKIP, "the back-off is capped"
    skipped = 0
    while not policy.should_spin():
        skipped += 1
    assert skipped == MAX_SPIN_SKIP, "where spins keep failing, one request in thousands tries"


def test_spins_that_catch_their_reply_bring_spinning_back() -> None:
    policy = SpinPolicy()
    for _ in range(5):
        policy.spun(False)
    assert policy.backoff == 32
    for _ in range(5):
        policy.spun(True)
    assert policy.backoff == 1
    policy.skip = 0
    assert policy.should_spin()


class Counting(SpinPolicy):
    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def should_spin(self) -> bool:
        self.asked += 1
        return super().should_spin()


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counting]:
    policy = Counting()
    monkeypatch.setattr(client, "spin_policy", policy)
    yield policy


def test_only_requests_that_cannot_wait_for_a_key_spin(counting: Counting) -> None:
    server = StoreServer("127.0.0.1", 0).start()
    store = TCPStore("127.0.0.1", server.port, timeout=timedelta(seconds=5))
    try:
        store.set("k", "v")
        assert counting.asked == 0, "the first request (it goes with the hello) spun"
        store.set("k", "v")
        store.add("n", 1)
        store.compare_set("k", "v", "w")
        assert counting.asked == 3
        store.get("k")
        store.wait(["k"])
        store.multi_get(["k"])
        assert counting.asked == 3, "a read that may wait for a key spun"
    finally:
        store.close()
        server.stop()


class SlowServer:
    """Speaks the handshake, then answers every request OK after ``delay`` seconds: a
    server whose replies come later than any spin lasts."""

    def __init__(self, delay: float) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.delay = delay
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            hello = MAGIC + bytes([VERSION, 0]) + bytes(SERVER_ID_SIZE) + U32.pack(2**20)
            conn.recv(9)
            conn.sendall(U32.pack(len(hello)) + hello)
            while True:
                header = conn.recv(4, socket.MSG_WAITALL)
                if len(header) < 4:
                    return
                conn.recv(U32.unpack(header)[0], socket.MSG_WAITALL)
                time.sleep(self.delay)
                conn.sendall(U32.pack(1) + b"\x00")


def test_a_server_that_answers_late_turns_spinning_off(counting: Counting) -> None:
    server = SlowServer(delay=0.05)  # far past a spin (0.2 ms), even on a loaded machine
    store = TCPStore("127.0.0.1", server.port, timeout=timedelta(seconds=5))
    try:
        store.set("k", "v")  # the first request goes with the hello: it never spins
        assert counting.skip == 0 and counting.backoff == 1
        spun = []
        for _ in range(8):
            skip_before = counting.skip
            store.set("k", "v")
            spun.append(skip_before == 0)
        # Spin, skip 1, spin, skip 2, spin, skip 4 ...: every spin was wasted.
        assert spun == [True, False, True, False, False, True, False, False]
        assert counting.backoff == 8
    finally:
        store.close()
        server.listener.close()
