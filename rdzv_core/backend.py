"""The backend contract (compare-and-set on an opaque token) and StoreBackend over any Store."""

from __future__ import annotations

import binascii
from abc import ABC, abstractmethod
from base64 import b64decode, b64encode
from typing import Any, TypeAlias

from .errors import CONNECTION_FAILED, RendezvousConnectionError, RendezvousStateError, StoreError
from .store import Store

__all__ = ["NULL_SENTINEL", "RendezvousBackend", "StoreBackend", "Token", "state_key"]

#: An opaque value returned with a state; pass it back to ``set_state`` to update that state.
Token: TypeAlias = Any

#: What the c10d layout stores for "no state yet" (base64 of b"canimadam").
NULL_SENTINEL = "Y2FuaW1hZGFt"

_STORE_FAILURES = (StoreError, TimeoutError, OSError, ValueError, RuntimeError)


def state_key(run_id: str) -> str:
    """The store key holding the state of ``run_id`` in the c10d layout."""
    return "torch.rendezvous." + run_id


class RendezvousBackend(ABC):
    """Holds one run's rendezvous state and updates it by compare-and-set.

    Implementations raise :class:`RendezvousConnectionError` when their medium fails and
    :class:`RendezvousStateError` when the stored state is corrupt.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """The backend's name (``"c10d"`` for :class:`StoreBackend`)."""

    @abstractmethod
    def get_state(self) -> tuple[bytes, Token] | None:
        """The current state and its token, or None when no state was ever set."""

    @abstractmethod
    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        """Write ``state`` if ``token`` is the current one (None: only if there is no state).

        Returns the state now stored, its token, and whether this call's state is what is
        stored; None if there is still no state.
        """


class StoreBackend(RendezvousBackend):
    """The backend over any :class:`Store`, byte-compatible with torch's c10d backend.

    The state of ``run_id`` is stored base64-encoded under ``torch.rendezvous.<run_id>``;
    the token is that stored text. Construction seeds the key with :data:`NULL_SENTINEL`
    through ``compare_set`` so an existing state is left alone.
    """

    def __init__(self, store: Store, run_id: str) -> None:
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        self._store = store
        self._key = state_key(run_id)
        self._call(store.compare_set, self._key, "", NULL_SENTINEL)

    @property
    def name(self) -> str:
        return "c10d"

    @property
    def store(self) -> Store:
        """The store this backend writes to."""
        return self._store

    def get_state(self) -> tuple[bytes, Token] | None:
        return self._decode(self._call(self._store.get, self._key))

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        sentinel = NULL_SENTINEL.encode()
        if isinstance(token, bytes):
            expected = token
        elif not token:
            expected = sentinel
        else:
            # Not a token this backend handed out: write nothing, report what is there.
            current = self.get_state()
            return None if current is None else (*current, False)
        encoded = b64encode(state)
        raw = self._call(self._store.compare_set, self._key, expected, encoded)
        if raw == sentinel and expected == b"":
            # b"" is the real token of an empty state (torch treats it as "no state"): honour
            # both readings, so neither the empty state nor a first write gets stuck.
            raw = self._call(self._store.compare_set, self._key, sentinel, encoded)
        stored = self._decode(raw)
        if stored is None:
            return None
        return stored[0], stored[1], stored[1] == encoded

    def _decode(self, raw: bytes) -> tuple[bytes, Token] | None:
        if raw == NULL_SENTINEL.encode():
            return None
        try:
            return b64decode(raw, validate=True), raw
        except binascii.Error as e:
            raise RendezvousStateError(
                "The state object is corrupt. See inner exception for details."
            ) from e

    @staticmethod
    def _call(op: Any, *args: Any) -> bytes:
        try:
            result: bytes = op(*args)
        except _STORE_FAILURES as e:
            raise RendezvousConnectionError(CONNECTION_FAILED) from e
        return result
