"""RendezvousParameters, case by case against torch's observed behaviour."""

from __future__ import annotations

from typing import Any

import pytest

from rdzv_core import RendezvousParameters


def params(**config: Any) -> RendezvousParameters:
    return RendezvousParameters("c10d", "localhost:29400", "run", 1, 2, **config)


def test_fields_and_config_kept_as_given() -> None:
    p = RendezvousParameters("c10d", "h:1", "r", 2, 4, "10.0.0.1", store_type="tcp", x=[1])
    assert (p.backend, p.endpoint, p.run_id, p.min_nodes, p.max_nodes, p.local_addr) == (
        "c10d",
        "h:1",
        "r",
        2,
        4,
        "10.0.0.1",
    )
    assert p.config == {"store_type": "tcp", "x": [1]}
    assert p.get("store_type") == "tcp" and p.get("absent", "d") == "d"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "e", "r", 1, 1), "The rendezvous backend name must be a non-empty string."),
        ((None, "e", "r", 1, 1), "The rendezvous backend name must be a non-empty string."),
        (
            ("c", "e", "r", 0, 1),
            "The minimum number of rendezvous nodes (0) must be greater than zero.",
        ),
        (
            ("c", "e", "r", 3, 2),
            "The maximum number of rendezvous nodes (2) must be greater than or equal to the "
            "minimum number of rendezvous nodes (3).",
        ),
        (("c", "e", "", 1, 1), "The run id must be a non-empty string."),
    ],
)
def test_validation_messages(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError) as info:
        RendezvousParameters(*args)
    assert str(info.value) == message


def test_backend_checked_before_run_id() -> None:
    with pytest.raises(ValueError, match="backend name"):
        RendezvousParameters("", "e", "", 1, 1)


def test_empty_endpoint_and_float_nodes_accepted() -> None:
    assert RendezvousParameters("c", "", "r", 1.5, 2).min_nodes == 1.5  # type: ignore[arg-type]


def test_str_min_nodes_is_python_type_error() -> None:
    with pytest.raises(TypeError):
        RendezvousParameters("c", "", "r", "1", 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("1", True),
        ("true", True),
        ("T", True),
        ("Yes", True),
        ("y", True),
        ("TRUE", True),
        ("0", False),
        ("false", False),
        ("F", False),
        ("NO", False),
        ("n", False),
    ],
)
def test_get_as_bool_accepts(value: Any, expected: bool | None) -> None:
    assert params(flag=value).get_as_bool("flag") is expected


@pytest.mark.parametrize("value", [2, -1, " true", "", "12", "1.5", "garbage", 1.0, [1]])
def test_get_as_bool_rejects(value: Any) -> None:
    with pytest.raises(ValueError) as info:
        params(flag=value).get_as_bool("flag")
    assert str(info.value) == (
        "The rendezvous configuration option 'flag' does not represent a valid boolean value."
    )


def test_get_as_bool_default_and_bad_default() -> None:
    assert params().get_as_bool("flag", "yes") is True
    assert params().get_as_bool("flag") is None
    with pytest.raises(ValueError):
        params().get_as_bool("flag", "maybe")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (7, 7),
        (True, 1),
        (1.9, 1),
        (" 7 ", 7),
        ("+5", 5),
        ("-5", -5),
        ("1_000", 1000),
        ("٣", 3),
    ],
)
def test_get_as_int_accepts(value: Any, expected: int | None) -> None:
    assert params(n=value).get_as_int("n") == expected


@pytest.mark.parametrize("value", ["", "1.5", "0x10", "garbage"])
def test_get_as_int_rejects_with_chained_cause(value: str) -> None:
    with pytest.raises(ValueError) as info:
        params(n=value).get_as_int("n")
    assert str(info.value) == (
        "The rendezvous configuration option 'n' does not represent a valid integer value."
    )
    assert isinstance(info.value.__cause__, ValueError)


def test_get_as_int_type_error_escapes_and_default_converted() -> None:
    with pytest.raises(TypeError):
        params(n=[1]).get_as_int("n")
    assert params().get_as_int("n", "6") == 6
