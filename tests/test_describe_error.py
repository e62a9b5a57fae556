"""describe_error: the one format every rdzv command uses for a failure."""

from __future__ import annotations

from rdzv_core import RendezvousConnectionError, StoreConnectionError, describe_error
from rdzv_core.errors import add_note


def test_message_useful_causes_and_hints_each_on_a_line() -> None:
    try:
        try:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as e:
                raise StoreConnectionError(f"Could not connect: {e}") from e
        except StoreConnectionError as e:
            error = RendezvousConnectionError("The connection failed.")
            add_note(error, "pip install something")
            raise error from e
    except RendezvousConnectionError as e:
        text = describe_error(e)
    assert text.splitlines() == [
        "RendezvousConnectionError: The connection failed.",
        "  caused by: StoreConnectionError: Could not connect: [Errno 111] Connection refused",
        "  hint: pip install something",
    ], "a cause whose text the line above already says is left out"


def test_causes_are_capped() -> None:
    error: BaseException = ValueError("root")
    for depth in range(10):
        outer = RuntimeError(f"level {depth}")
        outer.__cause__ = error
        error = outer
    assert len(describe_error(error).splitlines()) == 4
