"""Deprecations: how a public name or option leaves the API (see VERSIONING.md).

A deprecated thing keeps working, and each use warns with a :class:`DeprecationWarning`
that names what to use instead, the release that deprecated it and the release that will
remove it. A module lists its deprecations in a ``__deprecated__`` tuple, which the
public-API check in the tests reads: it proves each one still works and warns, and fails
once the release that should remove it is reached.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Deprecated", "moved_names"]


@dataclass(frozen=True)
class Deprecated:
    """One deprecated name, keyword or option.

    - ``name``: what users wrote, e.g. ``rdzv_core.store.check_key`` or
      ``rdzv_plugin_tcp.TCPStore(max_frame_size=...)``;
    - ``instead``: what to write now, in the words of the warning;
    - ``distribution``, ``since``, ``removal``: the distribution that deprecated it, the
      release that did, and the first release without it.
    """

    name: str
    instead: str
    distribution: str
    since: str
    removal: str

    @property
    def message(self) -> str:
        """The warning's text."""
        return (
            f"{self.name} is deprecated since {self.distribution} {self.since} and will be "
            f"removed in {self.removal}: {self.instead}."
        )

    def warn(self, stacklevel: int = 3) -> None:
        """Warn the caller of the deprecated thing (``stacklevel`` counts from here)."""
        warnings.warn(self.message, DeprecationWarning, stacklevel=stacklevel)


def moved_names(
    module: str, new_module: str, names: list[str], distribution: str, since: str, removal: str
) -> tuple[Callable[[str], object], tuple[Deprecated, ...]]:
    """A module ``__getattr__`` that serves ``names``, moved from ``module`` to
    ``new_module``, with a warning each time one is used, and the deprecations it serves
    (for the module's ``__deprecated__``)."""
    moved = {
        name: Deprecated(
            f"{module}.{name}",
            f"import it from {new_module}",
            distribution,
            since,
            removal,
        )
        for name in names
    }

    def __getattr__(name: str) -> object:
        deprecated = moved.get(name)
        if deprecated is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        deprecated.warn()
        return getattr(importlib.import_module(new_module), name)

    return __getattr__, tuple(moved.values())
