"""rdzv-plugin-file: the ``file`` store type. :class:`FileStore` loads on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import FileStore

__all__ = ["FileStore"]


def __getattr__(name: str) -> object:
    if name == "FileStore":
        from .store import FileStore

        return FileStore
    raise AttributeError(f"module 'rdzv_plugin_file' has no attribute {name!r}")
