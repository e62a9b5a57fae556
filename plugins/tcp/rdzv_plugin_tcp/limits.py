"""ServerLimits: every bound the TCP store server enforces, in one place (see the README)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_KEYWORD

__all__ = ["ServerLimits"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """The bounds of one server; the defaults suit a job of up to ~16,000 clients.

    - ``max_frame_size``: the largest request, and the largest reply, in bytes. A bigger
      request is answered with an error naming both sizes; the connection stays usable.
    - ``max_connections``: clients connected at once; more are refused with a message.
    - ``max_buffered_bytes``: input held by all connections' unfinished frames together.
      Past it, connections in the middle of a frame wait until others finish.
    - ``handshake_timeout``: seconds a new connection has to complete the handshake.
    - ``frame_timeout``: seconds a frame may take from its first byte to its last.
    - ``send_timeout``: seconds a client may leave its replies unread before it is closed.
    """

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_connections: int = 16384
    max_buffered_bytes: int = 256 * MIB
    handshake_timeout: float = 10.0
    frame_timeout: float = 60.0
    send_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not 1024 <= self.max_frame_size <= 2**31:
            raise ValueError(
                f"max_frame_size must be between 1024 bytes and 2 GiB, got {self.max_frame_size}."
            )
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}.")
        if self.max_buffered_bytes < self.max_frame_size:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least "
                f"max_frame_size ({self.max_frame_size})."
            )
        for name in ("handshake_timeout", "frame_timeout", "send_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 86400:
                raise ValueError(f"{name} must be between 0 and 86400 seconds, got {value}.")


def with_max_frame_size(
    limits: ServerLimits | None, max_frame_size: int, caller: str
) -> ServerLimits:
    """``limits`` with the frame limit given through the deprecated ``max_frame_size``
    keyword of ``caller`` (warns; giving ``limits`` as well is a TypeError)."""
    if limits is not None:
        raise TypeError(
            f"{caller}() takes max_frame_size or limits, not both: "
            "put the frame limit in limits=ServerLimits(max_frame_size=...)."
        )
    MAX_FRAME_SIZE_KEYWORD.warn(stacklevel=4)
    return replace(ServerLimits(), max_frame_size=max_frame_size)
