"""The store helpers 0.1.0 exported from rdzv_core.store still import from there, warn
once per use naming rdzv_core.storekit, and are the very same objects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import rdzv_core.storekit
from rdzv_core import store
from rdzv_core.deprecation import Deprecated

ROOT = Path(__file__).resolve().parents[1]
_RELEASED = json.loads((ROOT / "api" / "released" / "0.1.0" / "rdzv-core.json").read_text())
#: What rdzv_core.store exported in 0.1.0 and no longer does (api/released/0.1.0).
MOVED = sorted(set(_RELEASED["modules"]["rdzv_core.store"]["names"]) - set(store.__all__))


def test_the_moved_helpers_are_the_ones_0_1_0_had() -> None:
    assert len(MOVED) == 8 and "check_key" in MOVED and "to_bytes" in MOVED


@pytest.mark.parametrize("name", MOVED)
def test_a_moved_helper_imports_from_its_old_place_with_a_warning(name: str) -> None:
    with pytest.warns(DeprecationWarning) as caught:
        exec(f"from rdzv_core.store import {name} as found", namespace := {})
    assert namespace["found"] is getattr(rdzv_core.storekit, name)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"rdzv_core.store.{name} is deprecated since rdzv-core 0.2.0 and will be removed in "
        "0.4.0: import it from rdzv_core.storekit."
    )


def test_the_warning_points_at_the_importing_line() -> None:
    with pytest.warns(DeprecationWarning) as caught:
        from rdzv_core.store import to_bytes  # noqa: F401
    assert caught[0].filename == __file__


def test_the_new_place_and_the_public_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from rdzv_core.store import PrefixStore, Store  # noqa: F401
        from rdzv_core.storekit import check_key, to_bytes  # noqa: F401


def test_an_unknown_name_is_still_an_import_error() -> None:
    with pytest.raises(ImportError, match="cannot import name 'nope'"):
        exec("from rdzv_core.store import nope", {})


def test_a_deprecation_message_names_everything_a_user_needs() -> None:
    deprecated = Deprecated("pkg.old", "use pkg.new", "rdzv-x", since="0.2.0", removal="0.4.0")
    assert deprecated.message == (
        "pkg.old is deprecated since rdzv-x 0.2.0 and will be removed in 0.4.0: use pkg.new."
    )
