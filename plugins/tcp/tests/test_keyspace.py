"""The keyspace on its own: the store's semantics with no sockets, and a model-based fuzz
test that runs random operations, parked reads and deadlines against a plain model."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from rdzv_plugin_tcp.keyspace import Keyspace, Waiter
from rdzv_plugin_tcp.protocol import GET, MULTI_GET, QUEUE_POP, WAIT


class Recorder:
    """The wake callback: what each woken read would be answered."""

    def __init__(self) -> None:
        self.keyspace = Keyspace(self.wake)
        self.woken: list[tuple[object, int, list[bytes]]] = []

    def wake(self, waiter: Waiter) -> None:
        assert waiter.done and waiter.owner is not None
        if waiter.pops:
            assert waiter.item is not None
            self.woken.append((waiter.owner, waiter.op, [waiter.item]))
        else:
            self.woken.append((waiter.owner, waiter.op, self.keyspace.values(waiter.keys)))


def test_values_counters_and_compare_set() -> None:
    ks = Recorder().keyspace
    assert ks.get(b"k") is None and len(ks) == 0
    ks.set(b"k", b"v")
    assert ks.get(b"k") == b"v"
    assert ks.add(b"n", 5) == 5 and ks.add(b"n", -7) == -2 and ks.get(b"n") == b"-2"
    assert ks.add(b"big", 2**63 - 1) == 2**63 - 1 and ks.add(b"big", 1) == -(2**63)  # wraps
    with pytest.raises(ValueError, match="'k'"):
        ks.add(b"k", 1)
    assert ks.get(b"k") == b"v", "a failed add changed the value"
    assert ks.compare_set(b"c", b"", b"1") == b"1"  # absent and expected "": set
    assert ks.compare_set(b"d", b"x", b"1") == b"x" and ks.get(b"d") is None  # absent: no
    assert ks.compare_set(b"c", b"1", b"2") == b"2" and ks.get(b"c") == b"2"
    assert ks.compare_set(b"c", b"1", b"3") == b"2" and ks.get(b"c") == b"2"
    ks.multi_set([b"a", b"b"], [b"1", b"2"])
    assert ks.has_all([b"a", b"b", b"k"]) and not ks.has_all([b"a", b"zz"])
    assert ks.values([b"b", b"a"]) == [b"2", b"1"]
    assert ks.delete(b"a") and not ks.delete(b"a")
    assert len(ks) == 5  # k, n, big, c, b


def test_append_and_keys() -> None:
    recorder = Recorder()
    ks = recorder.keyspace
    ks.park("reader", GET, [b"w"], None)
    ks.append(b"w", b"po", limit=10)
    assert recorder.woken == [("reader", GET, [b"po"])], "an append that creates must wake"
    ks.append(b"w", b"tato", limit=10)
    assert ks.get(b"w") == b"potato"
    with pytest.raises(ValueError, match="would make its value 11 bytes, over .* 10 bytes"):
        ks.append(b"w", b"12345", limit=10)
    assert ks.get(b"w") == b"potato", "a refused append changed the value"
    assert sorted(ks.keys()) == [b"w"]


def test_queues_are_fifo_apart_from_keys_and_a_push_wakes_the_oldest_pop() -> None:
    recorder = Recorder()
    ks = recorder.keyspace
    assert ks.pop(b"q") is None and ks.queue_len(b"q") == 0
    ks.push(b"q", b"a")
    ks.push(b"q", b"b")
    assert len(ks) == 0 and ks.get(b"q") is None, "a queue is not a key"
    assert ks.queue_len(b"q") == 2 and ks.pop(b"q") == b"a" and ks.pop(b"q") == b"b"
    assert ks.pop(b"q") is None
    first = ks.park_pop("first", QUEUE_POP, b"q", 10.0)
    ks.park_pop("second", QUEUE_POP, b"q", 10.0)
    ks.cancel(first)  # the oldest pop went away: the next one gets the item
    ks.park_pop("third", QUEUE_POP, b"q", 10.0)
    ks.push(b"q", b"x")
    ks.push(b"q", b"y")
    ks.push(b"q", b"z")
    assert recorder.woken == [("second", QUEUE_POP, [b"x"]), ("third", QUEUE_POP, [b"y"])]
    assert ks.queue_len(b"q") == 1 and ks.pop(b"q") == b"z"
    assert list(ks.waiting()) == []


def test_a_parked_pop_expires_and_never_takes_an_item_afterwards() -> None:
    recorder = Recorder()
    ks = recorder.keyspace
    ks.park_pop("late", QUEUE_POP, b"q", 1.0)
    assert [owner for owner, _ in ks.expire(2.0)] == ["late"]
    ks.push(b"q", b"kept")
    assert recorder.woken == [] and ks.queue_len(b"q") == 1


def test_a_parked_read_is_woken_by_the_write_that_completes_its_keys() -> None:
    rec = Recorder()
    ks = rec.keyspace
    ks.set(b"a", b"1")
    waiter = ks.park("conn", MULTI_GET, [b"a", b"b", b"c"], None)
    assert waiter.on == b"b"
    ks.set(b"b", b"2")
    assert rec.woken == [] and waiter.on == b"c", "woken before its last key"
    ks.add(b"c", 3)
    assert rec.woken == [("conn", MULTI_GET, [b"1", b"2", b"3"])]
    assert waiter.done and waiter.owner is None and waiter.keys == []
    ks.set(b"c", b"again")
    assert len(rec.woken) == 1, "a read was answered twice"


def test_every_write_wakes_its_readers() -> None:
    rec = Recorder()
    ks = rec.keyspace
    for owner, op in (("get", GET), ("wait", WAIT)):
        ks.park(owner, op, [b"k"], None)
    ks.compare_set(b"k", b"", b"v")
    assert sorted(o for o, _, _ in rec.woken) == ["get", "wait"]
    ks.park("set-many", WAIT, [b"x", b"y"], None)
    ks.multi_set([b"y", b"x"], [b"1", b"2"])
    assert rec.woken[-1][0] == "set-many"


def test_a_failed_add_or_compare_set_wakes_nobody() -> None:
    rec = Recorder()
    ks = rec.keyspace
    ks.park("r", GET, [b"absent"], None)
    ks.compare_set(b"absent", b"x", b"1")
    assert rec.woken == []
    ks.set(b"text", b"abc")
    ks.park("t", WAIT, [b"text", b"absent"], None)
    with pytest.raises(ValueError):
        ks.add(b"text", 1)
    assert rec.woken == []


def test_deadlines_expire_in_order_and_a_cancelled_read_never_wakes() -> None:
    rec = Recorder()
    ks = rec.keyspace
    late = ks.park("late", GET, [b"k"], 20.0)
    early = ks.park("early", GET, [b"k"], 10.0)
    gone = ks.park("gone", GET, [b"k"], 5.0)
    ks.park("forever", GET, [b"k"], None)
    ks.cancel(gone)
    assert ks.next_deadline() == 5.0  # the tombstone, dropped when due
    assert ks.expire(4.9) == []
    assert ks.expire(15.0) == [("early", early)]
    assert early.done and early.owner is None
    ks.set(b"k", b"v")
    assert sorted(o for o, _, _ in rec.woken) == ["forever", "late"]
    assert ks.expire(100.0) == [], "a woken read expired too"
    assert late.done and list(ks.waiting()) == []


def test_waiting_lists_parked_reads_and_tidy_drops_tombstones() -> None:
    rec = Recorder()
    ks = rec.keyspace
    for i in range(3000):
        ks.park(i, GET, [b"k%d" % i], 1000.0 + i)
    assert len(list(ks.waiting())) == 3000
    for i in range(2000):
        ks.set(b"k%d" % i, b"v")
    ks.tidy()
    assert ks.next_deadline() == 3000.0, "tidy kept the deadlines of answered reads"
    assert [owner for owner, _ in ks.expire(10_000.0)] == list(range(2000, 3000))


class KeyspaceModel(RuleBasedStateMachine):
    """Random writes, reads and pops parked with and without deadlines, pushes, cancels and
    clock ticks; after every step the keyspace agrees with a dict, a list per queue and the
    pending reads and pops (a push goes to the pop of its queue that waited longest)."""

    def __init__(self) -> None:
        super().__init__()
        self.rec = Recorder()
        self.ks = self.rec.keyspace
        self.data: dict[bytes, bytes] = {}
        self.pending: dict[int, tuple[list[bytes], float | None, Waiter]] = {}
        self.queues: dict[bytes, list[bytes]] = {}
        self.popping: dict[int, tuple[bytes, float | None, Waiter]] = {}  # in arrival order
        self.answered: dict[int, list[bytes]] = {}
        self.expired: set[int] = set()
        self.now = 0.0
        self.next_owner = 0

    keys = st.sampled_from([b"a", b"b", b"c", b"d"])
    values = st.binary(max_size=3)

    def _settle(self) -> None:
        """Reads whose keys are all present are answered with the values of that moment."""
        for owner, values in [(o, v) for o, op, v in self.rec.woken if op != QUEUE_POP]:
            assert isinstance(owner, int)
            assert owner in self.pending, f"read {owner} answered twice or after expiring"
            keys, _, _ = self.pending.pop(owner)
            assert values == [self.data[k] for k in keys]
            self.answered[owner] = values
        self.rec.woken.clear()

    @rule(key=keys, value=values)
    def set(self, key: bytes, value: bytes) -> None:
        self.ks.set(key, value)
        self.data[key] = value
        self._settle()

    @rule(key=keys, amount=st.integers(-5, 5))
    def add(self, key: bytes, amount: int) -> None:
        current = self.data.get(key, b"0")
        try:
            expected = int(current)
        except ValueError:
            with pytest.raises(ValueError):
                self.ks.add(key, amount)
            return
        assert self.ks.add(key, amount) == expected + amount
        self.data[key] = str(expected + amount).encode()
        self._settle()

    @rule(key=keys, expected=values, desired=values)
    def compare_set(self, key: bytes, expected: bytes, desired: bytes) -> None:
        current = self.data.get(key)
        returned = self.ks.compare_set(key, expected, desired)
        if (current is None and expected == b"") or (current is not None and current == expected):
            self.data[key] = desired
            assert returned == desired
        else:
            assert returned == (expected if current is None else current)
        self._settle()

    @rule(queue=keys, item=values)
    def push(self, queue: bytes, item: bytes) -> None:
        self.ks.push(queue, item)
        waiting = [o for o, (q, _, _) in self.popping.items() if q == queue]
        if waiting:
            assert self.rec.woken == [(waiting[0], QUEUE_POP, [item])], "wrong pop woken"
            self.rec.woken.clear()
            del self.popping[waiting[0]]
        else:
            assert not self.rec.woken
            self.queues.setdefault(queue, []).append(item)

    @rule(queue=keys)
    def pop(self, queue: bytes) -> None:
        items = self.queues.get(queue)
        assert self.ks.pop(queue) == (items.pop(0) if items else None)

    @rule(queue=keys, wait=st.none() | st.floats(0, 10))
    def park_pop(self, queue: bytes, wait: float | None) -> None:
        if self.queues.get(queue):
            return  # the server pops such a queue at once, without parking
        owner = self.next_owner
        self.next_owner += 1
        deadline = None if wait is None else self.now + wait
        self.popping[owner] = (queue, deadline, self.ks.park_pop(owner, QUEUE_POP, queue, deadline))

    @precondition(lambda self: self.popping)
    @rule(data=st.data())
    def cancel_pop(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.popping)))
        self.ks.cancel(self.popping.pop(owner)[2])

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        assert self.ks.delete(key) == (key in self.data)
        self.data.pop(key, None)

    @rule(wanted=st.lists(keys, min_size=1, max_size=3), wait=st.none() | st.floats(0, 10))
    def park(self, wanted: list[bytes], wait: float | None) -> None:
        if all(k in self.data for k in wanted):
            return  # the server answers such a read at once, without parking it
        owner = self.next_owner
        self.next_owner += 1
        deadline = None if wait is None else self.now + wait
        waiter = self.ks.park(owner, MULTI_GET, wanted, deadline)
        self.pending[owner] = (wanted, deadline, waiter)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.pending)))
        _, _, waiter = self.pending.pop(owner)
        self.ks.cancel(waiter)

    @rule(step=st.floats(0, 5))
    def tick(self, step: float) -> None:
        self.now += step
        expired = {owner for owner, _ in self.ks.expire(self.now)}
        due = {o for o, (_, d, _) in self.pending.items() if d is not None and d <= self.now}
        due |= {o for o, (_, d, _) in self.popping.items() if d is not None and d <= self.now}
        assert expired == due
        for owner in expired:
            self.pending.pop(owner, None)
            self.popping.pop(owner, None)
        self.expired |= expired
        self.ks.tidy()

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert len(self.ks) == len(self.data)
        for key, value in self.data.items():
            assert self.ks.get(key) == value
        waiting = {w.owner for w in self.ks.waiting()}
        assert waiting == set(self.pending) | set(self.popping)
        for queue in (b"a", b"b", b"c", b"d"):
            assert self.ks.queue_len(queue) == len(self.queues.get(queue, []))
        for wanted, _, _ in self.pending.values():
            assert not all(k in self.data for k in wanted), "a satisfied read still waits"


TestKeyspaceModel = KeyspaceModel.TestCase
TestKeyspaceModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
