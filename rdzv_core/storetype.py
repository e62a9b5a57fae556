"""StoreType: the description of a store type that a plugin hands to the registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .capability import Capability
from .params import RendezvousParameters
from .store import Store

__all__ = ["StoreType"]


@dataclass(frozen=True)
class StoreType:
    """A store type: its name, what it offers, and how to open a store of it.

    Each fact is declared here once:

    - ``name``: must equal the name of the plugin's entry point (the registry checks it).
    - ``description``: one line, shown by ``rdzv plugins``.
    - ``create_store(params)``: opens (or hosts) the store ``params`` describe. The registry
      hands it a copy of ``params`` whose ``read_timeout`` is validated and always present
      (``default_read_timeout`` when the user gave none): read it with
      :func:`rdzv_core.storekit.read_timeout`. A ``ValueError`` (bad configuration) or a
      ``RendezvousError`` it raises reaches the caller unchanged; any other exception
      becomes ``RendezvousConnectionError`` with the exception as its cause. Keep imports
      of clients, servers and their libraries inside it.
    - ``default_read_timeout``: seconds, when the user sets no ``read_timeout``.
    - ``capabilities``: what the stores can do beyond the basic contract. The registry
      gives every store it creates these capabilities; a ``Store`` class need not (and
      should not) declare them again.
    - ``options``: the config keys this store type reads, each with a one-line help text
      (shown by ``rdzv plugins``). Keys that no store type and not the rendezvous itself
      reads get a warning naming the closest known key.
    """

    name: str
    description: str
    create_store: Callable[[RendezvousParameters], Store] = field(repr=False)
    default_read_timeout: int = 60
    capabilities: frozenset[Capability] = frozenset()
    options: Mapping[str, str] = field(default_factory=dict)

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
        for key, help_text in self.options.items():
            if not key or key != key.strip().lower() or "\n" in help_text:
                raise ValueError(
                    f"Store type {self.name!r}: option {key!r} must be a lower-case name with "
                    "a one-line help text."
                )
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def capabilities_of(self, store: Store) -> frozenset[Capability]:
        """What ``store`` of this type can do: the declared capabilities, or fewer that the
        store set on itself for its configuration. A store claiming more than declared, or
        a store class declaring others, is a TypeError (one fact declared twice, disagreeing)."""
        own = vars(store).get("capabilities")
        if own is not None:
            if not own <= self.capabilities:
                raise TypeError(
                    f"A store of type '{self.name}' claims capabilities "
                    f"{sorted(map(str, own - self.capabilities))} that "
                    "StoreType(capabilities=...) does not declare."
                )
            return frozenset(own)
        in_class = type(store).capabilities
        if in_class and in_class != self.capabilities:
            raise TypeError(
                f"Store type '{self.name}' declares capabilities "
                f"{sorted(map(str, self.capabilities))} but its store class "
                f"{type(store).__name__} declares {sorted(map(str, in_class))}. Declare them "
                "once, in StoreType(capabilities=...), and remove the class attribute."
            )
        return self.capabilities
