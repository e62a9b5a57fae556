"""TorchRendezvousHandler: rdzv's rendezvous handler as torch's ``RendezvousHandler``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch.distributed.elastic.rendezvous as torch_rdzv

import rdzv_core
from rdzv_core import RendezvousParameters
from rdzv_core.rendezvous import RendezvousHandler, create_handler

from .stores import as_torch_store

__all__ = ["TorchRendezvousHandler", "create_torch_handler"]

T = TypeVar("T")

# rdzv's errors and the torch classes they become (most specific first).
_ERRORS: list[tuple[type[Exception], type[Exception]]] = [
    (rdzv_core.RendezvousGracefulExitError, torch_rdzv.RendezvousGracefulExitError),
    (rdzv_core.RendezvousClosedError, torch_rdzv.RendezvousClosedError),
    (rdzv_core.RendezvousTimeoutError, torch_rdzv.RendezvousTimeoutError),
    (rdzv_core.RendezvousConnectionError, torch_rdzv.RendezvousConnectionError),
    (rdzv_core.RendezvousStateError, torch_rdzv.RendezvousStateError),
    (rdzv_core.RendezvousError, torch_rdzv.RendezvousError),
]


@contextmanager
def _as_torch_errors() -> Iterator[None]:
    """Raise rdzv's rendezvous errors as torch's classes (the agent catches its own)."""
    try:
        yield
    except rdzv_core.RendezvousError as e:
        for ours, theirs in _ERRORS:
            if isinstance(e, ours):
                raise theirs(str(e)) from e
        raise


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y", "on")


class TorchRendezvousHandler(torch_rdzv.RendezvousHandler):  # type: ignore[misc]
    """torch's handler interface over an rdzv :class:`RendezvousHandler`.

    ``get_backend()`` is the ``--rdzv-backend`` name; ``next_rendezvous()`` returns torch's
    ``RendezvousInfo`` whose store is a ``torch.distributed.Store`` view of the round's
    store; ``use_agent_store`` (config option, default false) needs store type
    ``torch-tcp``, whose server the workers can then join.
    """

    def __init__(self, handler: RendezvousHandler, backend: str, use_agent_store: bool) -> None:
        self._handler = handler
        self._backend = backend
        self._use_agent_store = use_agent_store

    @property
    def rdzv_handler(self) -> RendezvousHandler:
        return self._handler

    def get_backend(self) -> str:
        return self._backend

    def get_run_id(self) -> str:
        return self._handler.get_run_id()

    @property
    def use_agent_store(self) -> bool:
        return self._use_agent_store

    def next_rendezvous(self) -> Any:
        with _as_torch_errors():
            info = self._handler.next_rendezvous()
        store = as_torch_store(info.store)
        if self._use_agent_store:
            raw = info.store.underlying_store  # type: ignore[attr-defined]
            bootstrap = torch_rdzv.RendezvousStoreInfo(raw.host, raw.port)
        else:
            b = info.bootstrap_store_info
            bootstrap = torch_rdzv.RendezvousStoreInfo(b.master_addr, b.master_port)
        return torch_rdzv.RendezvousInfo(store, info.rank, info.world_size, bootstrap)

    def _call(self, fn: Callable[[], T]) -> T:
        with _as_torch_errors():
            return fn()

    def is_closed(self) -> bool:
        return self._call(self._handler.is_closed)

    def set_closed(self) -> None:
        self._call(self._handler.set_closed)

    def num_nodes_waiting(self) -> int:
        return self._call(self._handler.num_nodes_waiting)

    def shutdown(self) -> bool:
        done = self._handler.shutdown()
        self._handler.close()
        return done


def create_torch_handler(params: Any) -> TorchRendezvousHandler:
    """The handler torchrun asks for, from torch's ``RendezvousParameters``."""
    config = dict(params.config)
    use_agent_store = _truthy(config.get("use_agent_store", "false"))
    store_type = str(config.get("store_type", "tcp")).strip().lower()
    if use_agent_store and store_type != "torch-tcp":
        raise ValueError(
            "use_agent_store=true lets the workers join the agent's store with torch's own "
            f"client, so it needs store_type=torch-tcp (got store_type={store_type})."
        )
    ours = RendezvousParameters(
        params.backend,
        params.endpoint,
        params.run_id,
        params.min_nodes,
        params.max_nodes,
        params.local_addr,
        **config,
    )
    with _as_torch_errors():
        handler = create_handler(ours)
    return TorchRendezvousHandler(handler, params.backend, use_agent_store)
