"""The plugin contract: the hooks a plugin may implement, marked with :data:`hookimpl`.

A plugin is an object (usually a module) whose functions are decorated with
``@rdzv_core.hookimpl`` and named after the specifications below. Distributions publish
one under the ``rdzv`` entry-point group; the entry point's name is the store type's name::

    [project.entry-points.rdzv]
    tcp = "rdzv_plugin_tcp.plugin"

Rank orders (``rank_order=<name>``) come the same way, from the ``rdzv.rank_orders`` group;
the entry point's name is the rank order's name, and its module implements
:func:`rdzv_rank_orders`::

    [project.entry-points."rdzv.rank_orders"]
    by_switch = "acme_rdzv_orders"

A hook implementation may accept fewer arguments than its specification, never others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from .events import RendezvousEvent
from .storetype import StoreType

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

    from .params import RendezvousParameters
    from .rendezvous.policy import Exclusion, RankOrder, RestartBudget

PROJECT = "rdzv"

hookspec = pluggy.HookspecMarker(PROJECT)
#: The marker plugins decorate their hook implementations with.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rdzv_store_type() -> StoreType:  # type: ignore[empty-body]
    """Describe the store type this plugin provides.

    Called once, when the plugin is loaded. Must be cheap and must not import the store's
    client or server libraries: those belong inside ``StoreType.create_store``. For a plugin
    loaded from an entry point, the returned name must equal the entry point's name.
    """


@hookspec
def rdzv_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add subcommands to the ``rdzv`` command.

    ``subparsers`` is the argparse sub-parser collection of ``rdzv``: add a parser with
    ``subparsers.add_parser(name, help=...)`` and bind the function that runs it with
    ``parser.set_defaults(run=func)``, where ``func(args: argparse.Namespace) -> int``
    returns the exit status. Command names must not clash with other commands.
    """


@hookspec
def rdzv_event(event: RendezvousEvent) -> None:
    """Observe an event (store created or hosted, join, completed, node lost, closed, failure).

    Called synchronously in the thread that caused the event, for every loaded plugin;
    keep it fast. An exception raised here is logged and never disturbs the rendezvous.
    """


@hookspec
def rdzv_node_attributes(params: RendezvousParameters) -> Mapping[str, str] | None:
    """Declare attributes of this node (rack, switch, NVLink domain, ...) before it joins.

    Called once per handler, with the run's parameters; return a mapping of attribute names
    (letters, digits, ``_``, ``.``, ``-``) to printable values, or None. ``RDZV_NODE_ATTRS``
    and the ``node_attrs`` config key override what hooks declare; ``host`` is reserved.
    The attributes travel in the node's slot record, show in ``rdzv state``, and the rank
    policy (``rank_order=topology``, ``rank0=attribute=value``) orders by them.
    """


@hookspec
def rdzv_health_check(params: RendezvousParameters) -> Callable[[], str | None] | None:
    """A check this node must pass before it joins a round, or None.

    Return a callable that returns None when the node is healthy, else a one-line reason;
    it runs before every round this node joins, beside the ``health_check`` command if one
    is configured. A failing node is excluded (``exclude_by``, with a cool-down) and its
    ``next_rendezvous`` raises ``RendezvousExcludedError`` with the reason. A check that
    raises fails the node too, unless ``health_fail_open=true``.
    """


@hookspec
def rdzv_rank_orders() -> Mapping[str, Callable[[RendezvousParameters], RankOrder]]:  # type: ignore[empty-body]
    """Provide rank orders, by name: each a factory that builds the
    :class:`~rdzv_core.rendezvous.policy.RankOrder` from the run's parameters.

    ``rank_order=<name>`` selects one. The factory reads the order's own config keys
    (declare them in ``RankOrder.options``) and raises ValueError naming what is accepted
    when they are wrong. Names may not repeat a built-in (``sorted``, ``sticky``,
    ``topology``) or another plugin's. Prove an order with
    :class:`rdzv_core.testing.RankOrderSuite`.
    """


@hookspec(firstresult=True)
def rdzv_exclusion_rule(params: RendezvousParameters) -> Exclusion | None:
    """How this run keeps failing nodes out, instead of the built-in rule (``exclude_by``,
    ``cooldown_min``, ``cooldown_max``, ``max_strikes``), or None.

    Return a subclass of :class:`~rdzv_core.rendezvous.policy.Exclusion` overriding
    ``cooldown(strikes, jitter)`` (seconds out), ``permanent(strikes)`` and ``describe()``
    (compared between the nodes of a run). The first plugin that returns one decides.
    """


@hookspec(firstresult=True)
def rdzv_restart_budget(params: RendezvousParameters) -> RestartBudget | None:
    """How many failure-caused re-rendezvous this run may have, instead of the built-in
    ``max_restarts``, or None.

    Return a subclass of :class:`~rdzv_core.rendezvous.policy.RestartBudget` overriding
    ``exhausted(count, cause)`` (None, or why the run is closed) and ``describe()``
    (compared between the nodes of a run). The first plugin that returns one decides.
    """
