"""rdzv-plugin-tcp: the ``tcp`` store type.

Importing this package is cheap; the client and server load on first use of
:class:`TCPStore` or :class:`StoreServer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rdzv_core.deprecation import Deprecated

#: The port used when an endpoint names none (read at call time, so it can be patched).
DEFAULT_PORT = 29400
#: The largest frame a server accepts unless told otherwise (64 MiB).
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024

#: TCPStore's and StoreServer's ``max_frame_size`` keyword (until 0.2.0).
MAX_FRAME_SIZE_KEYWORD = Deprecated(
    "The max_frame_size keyword of rdzv_plugin_tcp.TCPStore and StoreServer",
    "pass limits=ServerLimits(max_frame_size=...) instead",
    "rdzv-plugin-tcp",
    since="0.2.0",
    removal="0.4.0",
)
__deprecated__ = (MAX_FRAME_SIZE_KEYWORD,)

if TYPE_CHECKING:
    from .auth import AuthenticationError
    from .client import TCPStore
    from .limits import ServerLimits
    from .server import StoreServer

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_PORT",
    "AuthenticationError",
    "ServerLimits",
    "StoreServer",
    "TCPStore",
]


def __getattr__(name: str) -> object:
    if name == "TCPStore":
        from .client import TCPStore

        return TCPStore
    if name == "StoreServer":
        from .server import StoreServer

        return StoreServer
    if name == "ServerLimits":
        from .limits import ServerLimits

        return ServerLimits
    if name == "AuthenticationError":
        from .auth import AuthenticationError

        return AuthenticationError
    raise AttributeError(f"module 'rdzv_plugin_tcp' has no attribute {name!r}")
