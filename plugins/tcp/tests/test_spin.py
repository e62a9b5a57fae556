"""The spin policy: busy-polling is learned from how spins end; the client spins for a
reply, except in reads that may wait for a key; the server spins for the next request."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import rdzv_plugin_tcp.client as client
import rdzv_plugin_tcp.server as server_module
from rdzv_plugin_tcp import StoreServer, TCPStore
from rdzv_plugin_tcp.protocol import MAGIC, SERVER_ID_SIZE, U32, VERSION
from rdzv_plugin_tcp.spin import MAX_SPIN_PAUSE, MIN_SPIN_PAUSE, SpinPolicy


def test_each_wasted_spin_pauses_spinning_twice_as_long() -> None:
    policy = SpinPolicy()
    assert policy.should_spin()
    for pause in (MIN_SPIN_PAUSE, 2 * MIN_SPIN_PAUSE, 4 * MIN_SPIN_PAUSE):
        before = time.monotonic()
        policy.spun(False)
        after = time.monotonic()
        assert before + pause <= policy.resume_at <= after + pause
        assert policy.pause == 2 * pause
    policy.resume_at = time.monotonic() + 60
    assert not policy.should_spin(), "a request spun during the pause"
    policy.resume_at = time.monotonic() - 0.001
    assert policy.should_spin(), "the pause ended but spinning did not resume"


def test_the_pause_is_capped_so_one_spin_a_second_still_tries() -> None:
    policy = SpinPolicy()
    for _ in range(40):
        policy.spun(False)
    assert policy.pause == MAX_SPIN_PAUSE
    assert policy.resume_at <= time.monotonic() + MAX_SPIN_PAUSE


def test_spins_that_catch_their_reply_bring_spinning_back() -> None:
    policy = SpinPolicy()
    for _ in range(5):
        policy.spun(False)
    assert policy.pause == 32 * MIN_SPIN_PAUSE
    # A catch by a spin that began before the last wasted one leaves that pause running
    # (many threads: ending it at each catch would keep them all spinning).
    policy.resume_at = paused_until = time.monotonic() + 60
    policy.spun(True)
    assert policy.resume_at == paused_until and not policy.should_spin()
    assert policy.pause == 16 * MIN_SPIN_PAUSE, "a catch halves the next pause"
    # Once the pause is over, a catch clears it: requests stop reading the clock.
    policy.resume_at = time.monotonic() - 0.001
    policy.spun(True)
    assert policy.resume_at == 0.0 and policy.should_spin()
    for _ in range(5):
        policy.spun(True)
    assert policy.pause == MIN_SPIN_PAUSE


class Counting(SpinPolicy):
    def __init__(self) -> None:
        super().__init__()
        self.asked = self.spins = self.caught = 0

    def should_spin(self) -> bool:
        self.asked += 1
        return super().should_spin()

    def spun(self, caught: bool) -> None:
        self.spins += 1
        self.caught += caught
        super().spun(caught)


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
        assert counting.asked == 0 and counting.pause == MIN_SPIN_PAUSE
        # Each request comes 50 ms or more after the last one's spin, past every pause up
        # to 32 ms: the first six spin, each wasted, each doubling the pause.
        for _ in range(6):
            store.set("k", "v")
        assert counting.asked == counting.spins == 6
        assert counting.pause == 64 * MIN_SPIN_PAUSE
        # Once the pause outlasts the time between requests, requests stop spinning.
        for _ in range(20):
            store.set("k", "v")
            if counting.spins < counting.asked:
                break
        assert counting.spins < counting.asked, "requests kept spinning, every spin wasted"
    finally:
        store.close()
        server.listener.close()


_ADDER = """
import sys, time
from rdzv_plugin_tcp import TCPStore
port, count, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
store = TCPStore("127.0.0.1", port)
for _ in range(count):
    store.add("n", 1)
    time.sleep(gap)
"""


def _add_from_a_process(port: int, count: int, gap: float) -> None:
    """``count`` adds from a client process of its own (as a server's clients are), ``gap``
    seconds apart."""
    args = [sys.executable, "-c", _ADDER, str(port), str(count), str(gap)]
    subprocess.run(args, check=True, timeout=60)


def test_the_server_spins_for_the_next_request_only_while_it_comes_within_the_spin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = StoreServer("127.0.0.1", 0)
    server._spin = policy = Counting()
    server.start()
    try:
        # Back to back, the next request comes microseconds after the reply, when the
        # client gets a core at once; on a loaded machine it may not, and then the spins
        # miss and the server stops spinning, as it should. So that the test does not
        # depend on the load, the spin is made long enough to catch it here.
        monkeypatch.setattr(server_module, "SERVER_SPIN_SECONDS", 0.05)
        _add_from_a_process(server.port, 200, 0.0)
        assert policy.caught > policy.spins // 2, (
            f"{policy.caught} of {policy.spins} spins caught a request sent back to back"
        )
        monkeypatch.undo()
        # Requests 20 ms apart: every spin is wasted, the pause doubles until it outlasts
        # the gap, and then the server sleeps through the gaps without spinning.
        asked, spins = policy.asked, policy.spins
        _add_from_a_process(server.port, 12, 0.02)
        assert policy.spins - spins < policy.asked - asked, "the server kept spinning"
        assert policy.pause >= 16 * MIN_SPIN_PAUSE
    finally:
        server.stop()
