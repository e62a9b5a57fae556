"""Shared-token authentication: an HMAC challenge-response at connect time.

The server sends a random nonce; the client answers HMAC-SHA256(token, context + nonce).
The token never crosses the wire and the server compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from rdzv_core import RendezvousParameters, StoreError

from .protocol import AUTH_CONTEXT

ENV_VAR = "RDZV_TCP_AUTH_TOKEN"
#: Bytes in a client's answer (an HMAC-SHA256 digest).
ANSWER_SIZE = 32


class AuthenticationError(StoreError):
    """The server rejected this client's token, or demanded one the client lacks."""


def answer(token: bytes, nonce: bytes) -> bytes:
    """The client's answer to ``nonce``."""
    return hmac.new(token, AUTH_CONTEXT + nonce, hashlib.sha256).digest()


def verify(token: bytes, nonce: bytes, response: bytes) -> bool:
    """Whether ``response`` proves knowledge of ``token`` (constant-time)."""
    return hmac.compare_digest(answer(token, nonce), response)


def as_token(token: str | bytes | None, source: str = "auth_token") -> bytes | None:
    """A token as bytes; None or empty means no authentication. A text token loses its
    surrounding whitespace, as a token file's does, so one secret given both ways matches;
    text that is only whitespace is a ValueError naming ``source``."""
    if token is None:
        return None
    if isinstance(token, str):
        if token and not token.strip():
            raise ValueError(f"The TCP store token ({source}) is only whitespace.")
        return token.strip().encode() or None
    return bytes(token) or None


def token_from_params(params: RendezvousParameters) -> bytes | None:
    """The token from config ``auth_token`` or ``auth_token_file``, else $RDZV_TCP_AUTH_TOKEN."""
    inline, path = params.get("auth_token"), params.get("auth_token_file")
    if inline and path:
        raise ValueError("Give the TCP store token as 'auth_token' or 'auth_token_file', not both.")
    if path:
        return read_token_file(str(path))
    if inline:
        return as_token(str(inline))
    return as_token(os.environ.get(ENV_VAR), f"${ENV_VAR}")


def read_token_file(path: str) -> bytes:
    """The token stored in ``path`` (surrounding whitespace dropped); must not be empty."""
    try:
        token = Path(path).read_bytes().strip()
    except OSError as e:
        raise ValueError(f"Cannot read the TCP store token file {path!r}: {e.strerror}.") from e
    if not token:
        raise ValueError(f"The TCP store token file {path!r} is empty.")
    return token
