"""RankOrderSuite: the rank order contract as tests, for built-in and plugin rank orders.

Subclass it in a test module and override the ``rank_order`` fixture to return your
configured :class:`~rdzv_core.rendezvous.policy.RankOrder`; override ``node_attributes``
when your order reads attributes other than ``rack`` and ``nvl_domain``. The tests check
the order's answers as pure decisions (valid indexes, the same answer whatever the order
of the candidates and whoever computes it), then run it in real rendezvous rounds of
handlers over the reference store: every node agrees on the ranks, the nodes it leaves
out wait as spares, and a round after a lost node completes too.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta

import pytest

from ..backend import StoreBackend
from ..errors import RendezvousGracefulExitError
from ..rendezvous.handler import RendezvousHandler, RendezvousInfo
from ..rendezvous.policy import Candidate, RankOrder, RankPolicy
from ..rendezvous.settings import HandlerSettings
from .memory import MemoryStore

__all__ = ["RankOrderSuite"]

_FAST = HandlerSettings(
    join_timeout=timedelta(seconds=30),
    last_call_timeout=timedelta(seconds=2),
    keep_alive_interval=timedelta(seconds=0.5),
    keep_alive_max_attempt=4,
)
_WAIT = 30.0


def _candidates(
    attributes: Sequence[Mapping[str, str]], previous: Sequence[int | None]
) -> list[Candidate]:
    return [
        Candidate(f"node{i}", {"host": f"10.0.0.{i}", **attrs}, i, previous[i])
        for i, attrs in enumerate(attributes)
    ]


class _Joiner:
    def __init__(self, handler: RendezvousHandler) -> None:
        self.handler = handler
        self.info: RendezvousInfo | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.info = self.handler.next_rendezvous()
        except BaseException as e:
            self.error = e


class RankOrderSuite:
    """The rank order contract. Override ``rank_order`` (and ``node_attributes``)."""

    @pytest.fixture
    def rank_order(self) -> RankOrder:
        raise NotImplementedError("override the rank_order fixture to return your RankOrder")

    @pytest.fixture
    def node_attributes(self) -> list[dict[str, str]]:
        """The attributes of 6 candidate nodes (``host`` is added)."""
        return [{"rack": f"r{i % 2}", "nvl_domain": "AB"[i // 3]} for i in range(6)]

    # -- the decision ------------------------------------------------------------------------

    def test_it_is_a_named_rank_order_with_a_stable_description(
        self, rank_order: RankOrder
    ) -> None:
        assert isinstance(rank_order, RankOrder)
        assert re.fullmatch(r"[a-z0-9_.\-]+", rank_order.name), (
            f"the name {rank_order.name!r} must be lower-case letters, digits, '_', '.', '-'"
        )
        described = rank_order.describe()
        assert isinstance(described, str) and described == rank_order.describe()
        assert described.isprintable(), "describe() is compared between nodes: one line"
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in rank_order.options.items())

    @pytest.mark.parametrize("count", [1, 2, 5, 6])
    @pytest.mark.parametrize("history", ["fresh", "all previous", "some previous"])
    def test_it_returns_distinct_indexes_of_the_candidates(
        self, rank_order: RankOrder, node_attributes: list[dict[str, str]], count: int,
        history: str,
    ) -> None:  # fmt: skip
        previous: list[int | None] = [None] * count
        if history == "all previous":
            previous = list(reversed(range(count)))
        elif history == "some previous":
            previous = [i if i % 2 else None for i in range(count)]
        candidates = _candidates(node_attributes[:count], previous)
        chosen = list(rank_order.arrange(candidates))
        assert all(isinstance(i, int) and 0 <= i < count for i in chosen), chosen
        assert len(set(chosen)) == len(chosen), f"an index repeats: {chosen}"

    def test_the_answer_does_not_depend_on_the_order_of_the_candidates(
        self, rank_order: RankOrder, node_attributes: list[dict[str, str]]
    ) -> None:
        previous = [None, 2, None, 0, 1, None]
        candidates = _candidates(node_attributes, previous)
        expected = [candidates[i].id for i in rank_order.arrange(candidates)]
        for seed in range(10):
            shuffled = list(candidates)
            random.Random(seed).shuffle(shuffled)
            got = [shuffled[i].id for i in rank_order.arrange(shuffled)]
            assert got == expected, f"listed in another order, the ranks changed: {got}"

    # -- in rendezvous rounds -------------------------------------------------------------------

    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore(timeout=timedelta(seconds=10))

    @pytest.fixture
    def handlers(
        self, rank_order: RankOrder, node_attributes: list[dict[str, str]], store: MemoryStore
    ) -> Iterator[list[RendezvousHandler]]:
        policy = RankPolicy(order=rank_order.name, rank_order=rank_order)
        count = len(node_attributes)
        made = []
        for attrs in node_attributes:
            client = store.client()
            backend = StoreBackend(client, "suite")
            handler = RendezvousHandler(
                "suite", client, backend, 1, count, "10.0.0.1", _FAST, policy=policy,
                attributes=attrs,
            )  # fmt: skip
            made.append(handler)
        yield made
        for handler in made:
            handler.close()

    @staticmethod
    def _round(joiners: list[_Joiner]) -> list[_Joiner]:
        """The joiners that completed a round once it is settled; the rest wait."""
        deadline = time.monotonic() + _WAIT
        while not any(j.info or j.error for j in joiners):
            assert time.monotonic() < deadline, "no node completed a round"
            time.sleep(0.05)
        time.sleep(1.0)  # the other members finish reading their ranks
        errors = [j.error for j in joiners if j.error is not None]
        assert not errors, f"nodes failed: {errors}"
        done = [j for j in joiners if j.info is not None]
        world = {j.info.world_size for j in done if j.info is not None}
        assert world == {len(done)}, f"world sizes {world} for {len(done)} members"
        ranks = sorted(j.info.rank for j in done if j.info is not None)
        assert ranks == list(range(len(done))), f"ranks {ranks}: each of 0..{len(done) - 1} once"
        return done

    def test_every_node_agrees_and_the_nodes_left_out_wait_as_spares(
        self, handlers: list[RendezvousHandler]
    ) -> None:
        joiners = [_Joiner(h) for h in handlers]
        members = self._round(joiners)
        spares = [j for j in joiners if j not in members]
        assert all(j.thread.is_alive() for j in spares), "a spare returned from the round"
        assert all(h.num_nodes_waiting() == 0 for h in handlers), "a spare counted as waiting"
        handlers[0].set_closed()
        for j in spares:
            j.thread.join(_WAIT)
            assert isinstance(j.error, RendezvousGracefulExitError), j.error

    def test_a_round_after_a_lost_member_completes_too(
        self, handlers: list[RendezvousHandler]
    ) -> None:
        joiners = [_Joiner(h) for h in handlers]
        members = self._round(joiners)
        if len(members) < 2:
            pytest.skip("the order makes a single member: no survivor to re-rendezvous")
        lost = members[-1]
        lost.handler.close()
        survivors = [j for j in members if j is not lost]
        deadline = time.monotonic() + _WAIT
        while not all(j.handler.num_nodes_waiting() for j in survivors):
            assert time.monotonic() < deadline, "the lost member was never reported"
            time.sleep(0.05)
        waiting = [j for j in joiners if j not in members]
        again = [_Joiner(j.handler) for j in survivors]
        members = self._round(again + waiting)
        assert lost.handler not in [j.handler for j in members]
