"""The rendezvous handler: membership, ranks, timeouts and elasticity over any store."""

from .handler import RendezvousHandler, RendezvousInfo, RendezvousStoreInfo, create_handler
from .policy import RankPolicy
from .settings import HandlerSettings, parse_config, parse_nnodes

__all__ = [
    "HandlerSettings",
    "RankPolicy",
    "RendezvousHandler",
    "RendezvousInfo",
    "RendezvousStoreInfo",
    "create_handler",
    "parse_config",
    "parse_nnodes",
]
