"""The ``torchrun.handlers`` entry point ``rdzv``: cheap to import, imports nothing heavy.

torch loads this when its rendezvous package is imported and calls :func:`handler_factory`
with no arguments; what it returns, ``create_torch_handler``, is called with torch's
``RendezvousParameters`` when ``torchrun --rdzv-backend=rdzv`` starts.
"""

from __future__ import annotations

from typing import Any


def handler_factory() -> Any:
    """torch's creator for ``--rdzv-backend=rdzv``."""

    def create(params: Any) -> Any:
        from .handler import create_torch_handler

        return create_torch_handler(params)

    return create
