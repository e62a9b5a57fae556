"""rdzv-torch: rdzv inside torch.

- ``torchrun --rdzv-backend=rdzv ...`` (entry point ``torchrun.handlers: rdzv``) runs rdzv's
  rendezvous handler over any installed store type;
- :func:`as_torch_store` / :func:`from_torch_store` adapt stores both ways;
- store type ``torch-tcp`` (entry point ``rdzv: torch-tcp``) is torch's C++ TCPStore.

Importing this package does not import torch; the adapters load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .stores import TorchBackedStore, TorchStoreView

__all__ = ["as_torch_store", "from_torch_store"]


def as_torch_store(store: Any) -> TorchStoreView:
    """An rdzv Store as a ``torch.distributed.Store``."""
    from .stores import as_torch_store as convert

    return convert(store)


def from_torch_store(torch_store: Any, timeout: Any = None) -> TorchBackedStore:
    """A ``torch.distributed.Store`` as an rdzv Store."""
    from .stores import from_torch_store as convert

    return convert(torch_store, timeout)
