"""Rank orders as plugins: the built-ins and a third-party order installed as a
distribution pass the same conformance suite; discovery, selection and bad input."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytest

import rdzv_core
from rdzv_core import (
    PluginConflictError,
    PluginLoadError,
    RendezvousParameters,
    StoreType,
    UnknownOptionWarning,
    hookimpl,
)
from rdzv_core.cli import main
from rdzv_core.registry import default_registry
from rdzv_core.rendezvous import create_handler
from rdzv_core.rendezvous.policy import (
    Candidate,
    RankOrder,
    RankPolicy,
    SortedOrder,
    StickyOrder,
    TopologyOrder,
)
from rdzv_core.testing import MemoryStore, RankOrderSuite

from .conftest import InstallDist

REVERSE = '''
from rdzv_core import hookimpl
from rdzv_core.rendezvous.policy import RankOrder


class Reverse(RankOrder):
    """Ranks in reverse host order, keeping at most `keep` nodes (the others are spares)."""

    name = "reverse"
    options = {"keep": "how many nodes are active (all)"}

    def __init__(self, keep):
        self.keep = keep

    def arrange(self, candidates):
        order = sorted(range(len(candidates)), key=lambda i: candidates[i].position)
        return order[::-1][: self.keep]

    def describe(self):
        return f"keep={self.keep}"


def build(params):
    keep = params.get_as_int("keep", 1000)
    if keep < 1:
        raise ValueError(f"keep must be 1 or more, got {keep}.")
    return Reverse(keep)


@hookimpl
def rdzv_rank_orders():
    return {"reverse": build}
'''


def params(**config: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", "unused", "run", 1, 1, **config)


@pytest.fixture
def reverse_installed(install_dist: InstallDist) -> None:
    install_dist("acme-orders", "1.0", {"reverse": "acme_orders"}, {"acme_orders": REVERSE},
                 group="rdzv.rank_orders")  # fmt: skip


# -- the suite on the built-ins and on the plugin ----------------------------------------------


class TestSorted(RankOrderSuite):
    @pytest.fixture
    def rank_order(self) -> RankOrder:
        return SortedOrder()


class TestSticky(RankOrderSuite):
    @pytest.fixture
    def rank_order(self) -> RankOrder:
        return StickyOrder()


class TestTopology(RankOrderSuite):
    @pytest.fixture
    def rank_order(self) -> RankOrder:
        return TopologyOrder("nvl_domain")


class TestThirdParty(RankOrderSuite):
    """The plugin, found through its entry point, keeping 4 of 6 nodes: 2 spares."""

    @pytest.fixture
    def rank_order(self, reverse_installed: None) -> RankOrder:
        order = default_registry().rank_policy(params(rank_order="reverse", keep="4")).rank_order
        assert order is not None and order.name == "reverse"
        return order


class Unstable(RankOrder):
    name = "unstable"

    def arrange(self, candidates: Sequence[Candidate]) -> Sequence[int]:
        return list(range(len(candidates)))  # the list's order: not the nodes'


def test_the_suite_catches_an_order_that_depends_on_the_list_order() -> None:
    suite = RankOrderSuite()
    attributes = [{"rack": f"r{i}"} for i in range(6)]
    with pytest.raises(AssertionError, match="listed in another order, the ranks changed"):
        suite.test_the_answer_does_not_depend_on_the_order_of_the_candidates(Unstable(), attributes)


# -- selection -------------------------------------------------------------------------------


def test_a_plugins_order_is_selected_by_name_with_its_options(reverse_installed: None) -> None:
    policy = default_registry().rank_policy(params(rank_order="reverse", keep="2"))
    assert policy.describe() == "rank_order=reverse,keep=2"
    candidates = [Candidate(f"n{i}", {}, i) for i in range(4)]
    assert policy.ranks(candidates) == [3, 2]


class MemoryType:
    @hookimpl
    def rdzv_store_type(self) -> StoreType:
        return StoreType("mem", "For these tests.", lambda params: MemoryStore(),
                         capabilities=MemoryStore.capabilities)  # fmt: skip


def test_a_plugins_options_are_known_options(reverse_installed: None) -> None:
    """``keep`` is the plugin order's own option: no UnknownOptionWarning for it."""
    memory = MemoryType()
    rdzv_core.register(memory)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            config = {"store_type": "mem", "rank_order": "reverse", "keep": "1"}
            create_handler(RendezvousParameters("c10d", "x", "run", 1, 2, **config)).close()
        with pytest.warns(UnknownOptionWarning, match="'kep'.*did you mean 'keep'"):
            config = {"store_type": "mem", "rank_order": "reverse", "kep": "1"}
            create_handler(RendezvousParameters("c10d", "x", "run", 1, 2, **config)).close()
    finally:
        rdzv_core.unregister(memory)


def test_an_unknown_order_names_the_installed_ones(reverse_installed: None) -> None:
    with pytest.raises(ValueError) as caught:
        default_registry().rank_policy(params(rank_order="revers"))
    assert "rank_order must be one of sorted, sticky, topology, got 'revers'" in str(caught.value)
    with pytest.raises(ValueError, match="keep must be 1 or more, got 0"):
        default_registry().rank_policy(params(rank_order="reverse", keep="0"))


def test_every_installed_order_is_listed(reverse_installed: None) -> None:
    assert sorted(default_registry().rank_orders()) == ["reverse"]
    with pytest.raises(ValueError, match="sorted, sticky, topology, reverse, got 'nope'"):
        RankPolicy.from_params(params(rank_order="nope"), default_registry().rank_orders())


def test_an_order_may_not_take_a_built_in_name() -> None:
    class Plugin:
        @hookimpl
        def rdzv_rank_orders(self) -> dict[str, object]:
            return {"sticky": lambda p: StickyOrder()}

    plugin = Plugin()
    rdzv_core.register(plugin)
    try:
        with pytest.raises(PluginConflictError, match="Rank order 'sticky' of plugin .* built-in"):
            default_registry().rank_orders()
    finally:
        rdzv_core.unregister(plugin)


def test_an_entry_point_whose_plugin_lacks_the_order_is_broken(install_dist: InstallDist) -> None:
    install_dist("acme-broken", "1.0", {"other": "acme_orders"}, {"acme_orders": REVERSE},
                 group="rdzv.rank_orders")  # fmt: skip
    with pytest.raises(PluginLoadError, match="does not provide 'other'"):
        default_registry().rank_policy(params(rank_order="other"))


def test_an_entry_point_that_fails_to_import_is_a_load_error(install_dist: InstallDist) -> None:
    install_dist("acme-bad", "1.0", {"bad": "acme_bad"}, {"acme_bad": "raise ImportError('x')"},
                 group="rdzv.rank_orders")  # fmt: skip
    with pytest.raises(PluginLoadError, match="rank order 'bad' from acme-bad 1.0 failed"):
        default_registry().rank_policy(params(rank_order="bad"))


def test_rdzv_plugins_lists_the_rank_orders_and_where_each_comes_from(
    reverse_installed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    class Plugin:
        @hookimpl
        def rdzv_rank_orders(self) -> dict[str, object]:
            return {"by-rack": lambda p: TopologyOrder("rack")}

    plugin = Plugin()
    rdzv_core.register(plugin, name="site-orders")
    try:
        assert main(["plugins"]) == 0
    finally:
        rdzv_core.unregister(plugin)
    line = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert line == (
        "rank orders (rank_order=...): sorted (built in), sticky (built in), "
        "topology (built in), by-rack (site-orders), reverse (acme-orders 1.0)"
    )


def test_rdzv_plugins_exits_1_naming_a_broken_rank_order(
    install_dist: InstallDist, capsys: pytest.CaptureFixture[str]
) -> None:
    install_dist("acme-bad", "1.0", {"bad": "acme_bad"}, {"acme_bad": "raise ImportError('x')"},
                 group="rdzv.rank_orders")  # fmt: skip
    assert main(["plugins"]) == 1
    assert "rank orders: broken: The plugin of rank order 'bad' from acme-bad 1.0 failed" in (
        capsys.readouterr().out
    )
