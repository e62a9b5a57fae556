"""RendezvousParameters: what a launcher passes to the rendezvous, as torch defines it."""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_SECONDS", "RendezvousParameters"]

# The longest timeout or interval an option may give, in seconds (about 68 years): "never"
# in practice, and far inside what timedelta, thread waits and socket timeouts can hold.
MAX_SECONDS = 2**31 - 1

_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n"})


class RendezvousParameters:
    """The parameters of one rendezvous.

    ``config`` holds every extra keyword argument as given (from a command line, all values
    are strings). Validation and messages match torch's class of the same name, except that
    an empty ``run_id`` is rejected here, before any store or server is created.
    """

    def __init__(
        self,
        backend: str,
        endpoint: str,
        run_id: str,
        min_nodes: int,
        max_nodes: int,
        local_addr: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not backend:
            raise ValueError("The rendezvous backend name must be a non-empty string.")
        if min_nodes < 1:
            raise ValueError(
                f"The minimum number of rendezvous nodes ({min_nodes}) must be greater than zero."
            )
        if max_nodes < min_nodes:
            raise ValueError(
                f"The maximum number of rendezvous nodes ({max_nodes}) must be greater than or "
                f"equal to the minimum number of rendezvous nodes ({min_nodes})."
            )
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        self.backend = backend
        self.endpoint = endpoint
        self.run_id = run_id
        self.min_nodes = min_nodes
        self.max_nodes = max_nodes
        self.local_addr = local_addr
        self.config: dict[str, Any] = kwargs

    def __repr__(self) -> str:
        return (
            f"RendezvousParameters(backend={self.backend!r}, endpoint={self.endpoint!r}, "
            f"run_id={self.run_id!r}, min_nodes={self.min_nodes}, max_nodes={self.max_nodes}, "
            f"local_addr={self.local_addr!r}, config={self.config!r})"
        )

    def get(self, key: str, default: Any = None) -> Any:
        """The config value of ``key``, or ``default`` when it is absent."""
        return self.config.get(key, default)

    def get_as_bool(self, key: str, default: Any = None) -> bool | None:
        """The config value of ``key`` (or ``default``) as a bool; None stays None.

        Accepts bools, the ints 0 and 1, and the strings 1/true/t/yes/y and 0/false/f/no/n
        in any case (not stripped). Anything else raises ValueError, the default included.
        """
        value = self.get(key, default)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value == 1:
                return True
            if value == 0:
                return False
        elif isinstance(value, str):
            lowered = value.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
        raise ValueError(
            f"The rendezvous configuration option '{key}' does not represent a valid boolean value."
        )

    def get_as_int(self, key: str, default: Any = None) -> int | None:
        """The config value of ``key`` (or ``default``) converted with ``int()``; None stays None.

        A value ``int()`` rejects raises ValueError naming the key; a TypeError (say, a list
        value) is Python's own, as in torch.
        """
        value = self.get(key, default)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError as e:
            raise ValueError(
                f"The rendezvous configuration option '{key}' does not represent a valid "
                "integer value."
            ) from e
