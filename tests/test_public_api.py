"""The public API is a promise (VERSIONING.md): a change to it is a deliberate edit of the
committed surface (api/*.json) with a CHANGELOG line, and nothing a release had leaves
without a deprecation period.

The distributions checked are every one in the repository, or those named in
``RDZV_API_DISTRIBUTIONS`` (tools/matrix.py names the ones it installs on the other Python
versions).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("public_api", ROOT / "tools" / "public_api.py")
assert _spec is not None and _spec.loader is not None
public_api = importlib.util.module_from_spec(_spec)
sys.modules["public_api"] = public_api
_spec.loader.exec_module(public_api)

CHECKED = [
    d
    for d in os.environ.get("RDZV_API_DISTRIBUTIONS", ",".join(public_api.DISTRIBUTIONS)).split(",")
    if d
]
RELEASED = sorted(
    (path.stem, path.parent.name) for path in (public_api.API / "released").glob("*/*.json")
)
REMOVED: dict[str, str] = json.loads((public_api.API / "removed.json").read_text())
HOW_TO_UPDATE = (
    "If the change is deliberate, run `python tools/public_api.py --write` and add a line "
    "to CHANGELOG.md saying what changed and what users must do."
)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def test_every_distribution_has_a_committed_surface() -> None:
    committed = sorted(p.stem for p in public_api.API.glob("*.json") if p.stem != "removed")
    assert committed == sorted(public_api.DISTRIBUTIONS), (
        "api/ must hold one surface per distribution; a new distribution needs "
        "`python tools/public_api.py --write NAME`"
    )


@pytest.mark.parametrize("distribution", CHECKED)
def test_the_public_api_is_the_committed_one(distribution: str) -> None:
    live = flatten(public_api.surface(distribution))
    committed = flatten(json.loads(public_api.path_for(distribution).read_text()))
    changes = [f"  added   {k}: {live[k]}" for k in sorted(live.keys() - committed.keys())]
    changes += [f"  removed {k}: {committed[k]}" for k in sorted(committed.keys() - live.keys())]
    changes += [
        f"  changed {k}: {committed[k]} -> {live[k]}"
        for k in sorted(live.keys() & committed.keys())
        if live[k] != committed[k]
    ]
    assert not changes, (
        f"The public API of {distribution} differs from api/{distribution}.json:\n"
        + "\n".join(changes)
        + "\n"
        + HOW_TO_UPDATE
    )


@pytest.mark.parametrize(("distribution", "release"), [(d, r) for d, r in RELEASED if d in CHECKED])
def test_nothing_released_is_gone_without_a_deprecation(distribution: str, release: str) -> None:
    old = json.loads(public_api.path_for(distribution, release).read_text())
    live = public_api.surface(distribution)
    problems: list[str] = []
    for module, data in old["modules"].items():
        now = live["modules"].get(module, {"names": {}, "deprecated": {}})
        for name, entry in data["names"].items():
            where = f"{module}.{name}"
            if name not in now["names"]:
                problems += gone_name(module, name, live["version"])
                continue
            current = now["names"][name]
            for parameter in entry.get("parameters", []):
                if parameter not in current.get("parameters", []) and (
                    "**" not in current.get("parameters", [])
                ):
                    problems.append(f"{where}: the parameter {parameter!r} is gone")
            for member in entry.get("members", {}):
                if member not in current.get("members", {}):
                    problems.append(f"{where}: the member {member!r} is gone")
    for hook, spec in old.get("hooks", {}).items():
        if live["hooks"].get(hook, {}).get("arguments") != spec["arguments"]:
            problems.append(f"hook {hook}: {spec['arguments']} -> {live['hooks'].get(hook)}")
    for suite_class, parts in old.get("suite", {}).get("classes", {}).items():
        now_parts = live["suite"]["classes"].get(suite_class, {"tests": [], "fixtures": []})
        for test in set(parts["tests"]) - set(now_parts["tests"]):
            problems.append(f"suite {suite_class}.{test} is gone (plugins may xfail it by name)")
    for command, flags in old["cli"].items():
        for flag in flags:
            if flag not in live["cli"].get(command, {}):
                problems.append(f"rdzv {command} {flag} is gone")
    assert not problems, (
        f"Since {distribution} {release}, without a deprecation period:\n  "
        + "\n  ".join(problems)
        + "\nKeep them working with a DeprecationWarning (rdzv_core.deprecation) until the "
        "release VERSIONING.md allows their removal."
    )


def gone_name(module: str, name: str, version: str) -> list[str]:
    """Problems with a released name that the module no longer exports."""
    where = f"{module}.{name}"
    if where in REMOVED:
        if version_tuple(version) < version_tuple(REMOVED[where]):
            return [f"{where} was removed before {REMOVED[where]}, its scheduled release"]
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            getattr(importlib.import_module(module), name)
        except AttributeError:
            return [f"{where} is gone"]
    if not any(issubclass(w.category, DeprecationWarning) for w in caught):
        return [f"{where} still works but no longer warns (and is not in __all__)"]
    return []


def deprecations() -> list[tuple[str, Any]]:
    found = []
    for distribution in CHECKED:
        for module in public_api.PUBLIC_MODULES[distribution]:
            for deprecated in getattr(importlib.import_module(module), "__deprecated__", ()):
                found.append((distribution, deprecated))
    return found


@pytest.mark.parametrize(("distribution", "deprecated"), deprecations(), ids=lambda v: str(v))
def test_each_deprecation_warns_and_leaves_on_schedule(distribution: str, deprecated: Any) -> None:
    version = importlib.metadata.version(distribution)
    assert deprecated.distribution == distribution
    assert version_tuple(version) < version_tuple(deprecated.removal), (
        f"{deprecated.name} was to be removed in {deprecated.removal} and {distribution} is "
        f"{version}: remove it, and list it in api/removed.json"
    )
    assert version_tuple(deprecated.since) <= version_tuple(version)
    module, _, name = deprecated.name.rpartition(".")
    if name.isidentifier() and module in sys.modules:
        with pytest.warns(DeprecationWarning) as caught:
            getattr(sys.modules[module], name)
        message = str(caught[0].message)
        assert message == deprecated.message
        assert deprecated.removal in message and deprecated.instead in message


def test_the_removal_record_names_only_released_names() -> None:
    released_names = {
        f"{module}.{name}"
        for d, r in RELEASED
        for module, data in json.loads(public_api.path_for(d, r).read_text())["modules"].items()
        for name in data["names"]
    }
    assert set(REMOVED) <= released_names, set(REMOVED) - released_names
