"""Whether an installed plugin distribution was made for this rdzv-core.

A plugin declares the core releases it supports the standard way, as a requirement in its
package metadata (``dependencies = ["rdzv-core>=0.2,<0.3"]``). pip can still leave a plugin
beside a core it does not support (an upgrade of rdzv-core alone, ``--no-deps``), so the
registry checks that requirement before it imports the plugin, and refuses a plugin whose
range excludes the running core with an error naming both versions.

The common requirement (plain release numbers, as every rdzv plugin writes them) is decided
here without importing ``packaging``: that import would cost more than the rest of plugin
discovery. Anything else (pre-releases, local versions, environment markers) goes to
``packaging``, which pip itself uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["requirement_problem"]

CORE = "rdzv-core"

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?"
    r"\s*\(?(?P<spec>[^;()]*)\)?\s*(?:;(?P<marker>.*))?$"
)
_CLAUSE = re.compile(r"^\s*(~=|==|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)(\.\*)?\s*$")
_RELEASE = re.compile(r"^\d+(?:\.\d+)*$")


def requirement_problem(
    distribution: str, version: str, requires: Iterable[str] | None, core_version: str
) -> str | None:
    """Why ``distribution`` (at ``version``, with these ``Requires-Dist`` lines) cannot run
    on rdzv-core ``core_version``: one line naming both versions and what to install. None
    when it declares no rdzv-core requirement, or one that ``core_version`` meets."""
    for line in requires or ():
        match = _REQUIREMENT.match(line)
        if match is None or _canonical(match["name"]) != CORE:
            continue
        marker = (match["marker"] or "").strip()
        if marker and not _marker_applies(marker):
            continue
        spec = match["spec"].strip()
        try:
            supported = not spec or _satisfies(core_version, spec)
        except ValueError:  # packaging's InvalidSpecifier
            return (
                f"{distribution} {version} declares an rdzv-core requirement that is not a "
                f"valid version range ({spec!r}): install a release of {distribution} with "
                "valid metadata"
            )
        if not supported:
            return (
                f"{distribution} {version} supports rdzv-core{spec}, but rdzv-core "
                f"{core_version} is installed: install a release of {distribution} made for "
                f"rdzv-core {core_version}, or rdzv-core{spec}"
            )
    return None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_applies(marker: str) -> bool:
    """A requirement with a marker applies at run time unless it belongs to an extra."""
    if "extra" in marker:
        return False
    from packaging.markers import Marker

    return Marker(marker).evaluate()


def _satisfies(version: str, spec: str) -> bool:
    clauses = [_CLAUSE.match(clause) for clause in spec.split(",")]
    simple = all(c and _simple(*c.groups()) for c in clauses)
    if not _RELEASE.match(version) or not simple:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(spec).contains(version, prereleases=True)
    have = _numbers(version)
    for clause in clauses:
        assert clause is not None
        op, number, wildcard = clause.groups()
        if not _holds(have, op, _numbers(number), bool(wildcard)):
            return False
    return True


def _simple(op: str, number: str, wildcard: str | None) -> bool:
    """A clause this module decides (the rest, valid or not, is left to packaging)."""
    if wildcard:
        return op in ("==", "!=")
    return op != "~=" or "." in number


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _holds(have: tuple[int, ...], op: str, want: tuple[int, ...], wildcard: bool) -> bool:
    if wildcard:  # ==X.Y.* / !=X.Y.*: a prefix match
        prefix = _pad(have, len(want))[: len(want)] == want
        return prefix if op == "==" else not prefix
    if op == "~=":  # ~=X.Y means >=X.Y and ==X.*
        return _cmp(have, want) >= 0 and _pad(have, len(want))[: len(want) - 1] == want[:-1]
    order = _cmp(have, want)
    return {
        "==": order == 0,
        "!=": order != 0,
        "<": order < 0,
        "<=": order <= 0,
        ">": order > 0,
        ">=": order >= 0,
    }[op]


def _pad(numbers: tuple[int, ...], size: int) -> tuple[int, ...]:
    return numbers + (0,) * (size - len(numbers))


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    size = max(len(a), len(b))
    left, right = _pad(a, size), _pad(b, size)
    return (left > right) - (left < right)
