"""StoreType: the description of a store type that a plugin hands to the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .capability import Capability
from .params import RendezvousParameters
from .store import Store

__all__ = ["StoreType"]


@dataclass(frozen=True)
class StoreType:
    """A store type: its name, what it offers, and how to open a store of it.

    ``create_store(params)`` opens (or hosts) the store that ``params`` describe, with
    ``params.config["read_timeout"]`` already validated by the registry; it raises
    whatever it raises, and the registry turns failures into
    ``RendezvousConnectionError``. Keep imports of clients and servers inside it.
    """

    name: str
    description: str
    create_store: Callable[[RendezvousParameters], Store] = field(repr=False)
    default_read_timeout: int = 60
    capabilities: frozenset[Capability] = frozenset()

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower():
            raise ValueError(
                f"A store type name must be non-empty, lower-case and unpadded, got {self.name!r}."
            )
        if "\n" in self.description:
            raise ValueError(f"The description of store type {self.name!r} must be one line.")
        if isinstance(self.default_read_timeout, bool) or self.default_read_timeout <= 0:
            raise ValueError(
                f"The default read timeout of store type {self.name!r} must be a positive "
                f"integer, got {self.default_read_timeout!r}."
            )
        object.__setattr__(
            self, "capabilities", frozenset(Capability(c) for c in self.capabilities)
        )
