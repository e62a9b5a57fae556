"""A plugin declares the rdzv-core releases it supports in its package metadata; the
registry refuses, before importing it, one whose range excludes the running core."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet

import rdzv_core
from rdzv_core import PluginLoadError, RendezvousParameters
from rdzv_core.compat import requirement_problem

from .conftest import InstallDist
from .test_registry import good

CORE = rdzv_core.__version__
MINOR = ".".join(CORE.split(".")[:2])


def params(store_type: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", "e", "run", 1, 1, store_type=store_type)


def test_a_plugin_for_another_core_is_broken_with_both_versions(install_dist: InstallDist) -> None:
    install_dist(
        "rdzv-old", "1.0", {"old": "rdzv_old"}, {"rdzv_old": good("old") + "\nIMPORTED = 1\n"},
        requires=("rdzv-core<0.2,>=0.1",),
    )  # fmt: skip
    with pytest.raises(PluginLoadError) as caught:
        rdzv_core.create_store(params("old"))
    assert str(caught.value) == (
        "The plugin of store type 'old' from rdzv-old 1.0 cannot run here: rdzv-old 1.0 "
        f"supports rdzv-core<0.2,>=0.1, but rdzv-core {CORE} is installed: install a release "
        f"of rdzv-old made for rdzv-core {CORE}, or rdzv-core<0.2,>=0.1."
    )
    assert "\n" not in str(caught.value)
    assert "rdzv_old" not in sys.modules, "an unsupported plugin was imported"
    (report,) = rdzv_core.plugins()
    assert (report.status, report.error) == ("broken", str(caught.value))


def test_a_plugin_for_this_core_loads(install_dist: InstallDist) -> None:
    install_dist(
        "rdzv-new", "2.0", {"new": "rdzv_new"}, {"rdzv_new": good("new")},
        requires=(
            f"rdzv-core>={MINOR},<{int(MINOR.split('.')[0]) + 1}",
            'rdzv-core[testing]<0.0.1; extra == "testing"',  # an extra's pin does not apply
            "pluggy>=1",
        ),
    )  # fmt: skip
    rdzv_core.create_store(params("new")).close()
    assert [p.status for p in rdzv_core.plugins()] == ["ok"]


def test_a_plugin_with_an_invalid_range_is_broken(install_dist: InstallDist) -> None:
    install_dist(
        "rdzv-odd", "1.0", {"odd": "rdzv_odd"}, {"rdzv_odd": good("odd")},
        requires=("rdzv-core (~=1)",),
    )  # fmt: skip
    with pytest.raises(PluginLoadError, match=r"not a valid version range \('~=1'\)"):
        rdzv_core.create_store(params("odd"))


def test_rdzv_plugins_shows_it_broken_and_exits_1(tmp_path: Path) -> None:
    site = tmp_path / "site"
    folder = site / "rdzv_old-1.0.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rdzv-old\nVersion: 1.0\nRequires-Dist: rdzv-core<0.2\n"
    )
    (folder / "entry_points.txt").write_text("[rdzv]\nold = rdzv_old\n")
    (site / "rdzv_old.py").write_text("raise SystemExit('imported')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
    env.update(PYTHONPATH=str(site), RDZV_PLUGINS="old")
    text = subprocess.run(
        [sys.executable, "-m", "rdzv_core", "plugins"], env=env, capture_output=True, text=True
    )
    assert text.returncode == 1, text.stderr
    assert "old" in text.stdout and "broken" in text.stdout
    machine = subprocess.run(
        [sys.executable, "-m", "rdzv_core", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert machine.returncode == 1
    (entry,) = json.loads(machine.stdout)
    assert entry["status"] == "broken"
    assert f"supports rdzv-core<0.2, but rdzv-core {CORE} is installed" in entry["error"]


VERSIONS = st.lists(st.integers(0, 12), min_size=1, max_size=3).map(
    lambda parts: ".".join(map(str, parts))
)
CLAUSES = st.tuples(st.sampled_from(["<", "<=", ">", ">=", "==", "!=", "~="]), VERSIONS).map(
    lambda c: c[0] + c[1]
)
WILDCARDS = st.tuples(st.sampled_from(["==", "!="]), VERSIONS).map(lambda c: f"{c[0]}{c[1]}.*")


@given(
    core=VERSIONS,
    clauses=st.lists(st.one_of(CLAUSES, WILDCARDS), min_size=1, max_size=3),
)
def test_the_range_check_agrees_with_packaging(core: str, clauses: list[str]) -> None:
    spec = ",".join(clauses)
    try:
        expected: bool | None = SpecifierSet(spec).contains(core, prereleases=True)
    except ValueError:
        expected = None  # not a valid range
    problem = requirement_problem("d", "1", [f"rdzv-core{spec}"], core)
    if expected is None:
        assert problem is not None and "not a valid version range" in problem
    else:
        assert (problem is None) is expected, (core, spec, problem)


@pytest.mark.parametrize(
    ("line", "core", "ok"),
    [
        ("rdzv-core>=0.2,<0.3", "0.2.0", True),
        ("rdzv-core>=0.2,<0.3", "0.3.0", False),
        ("rdzv_core (>=0.2, <0.3)", "0.3.0", False),  # old-style parentheses, underscores
        ("RDZV.Core<0.3", "0.3.0", False),  # names compare canonically
        ("rdzv-core", "9.9.9", True),  # no range: any core
        ("rdzv-core-extras<0.1", "0.2.0", True),  # another distribution
        ("rdzv-core>=0.2.0rc1", "0.2.0", True),  # pre-release syntax: packaging decides
        ("rdzv-core<0.3; python_version >= '3'", "0.3.0", False),  # a marker that applies
        ("rdzv-core<0.3; python_version < '3'", "0.3.0", True),  # one that does not
        ("rdzv-core<0.3", "0.3.0.dev1", False),  # PEP 440: <0.3 excludes 0.3 pre-releases
    ],
)
def test_requirement_lines(line: str, core: str, ok: bool) -> None:
    assert (requirement_problem("d", "1", [line], core) is None) is ok


ROOT = Path(__file__).resolve().parents[1]


def test_every_distribution_shares_one_version_and_requires_its_core_minor() -> None:
    """VERSIONING.md: released together under one number, each plugin requiring the core
    minor release it was tested with."""
    major, minor = (int(p) for p in CORE.split(".")[:2])
    projects = sorted(ROOT.glob("*/*/pyproject.toml"))
    assert len(projects) == 5, projects  # four plugins and rdzv-torch
    for pyproject in projects:
        text = pyproject.read_text()
        (version,) = re.findall(r'^version = "([^"]+)"', text, re.M)
        assert version == CORE, f"{pyproject}: version {version}, rdzv-core is {CORE}"
        (requirement,) = re.findall(r'"(rdzv-core[<>=,.0-9]+)"', text)
        assert requirement == f"rdzv-core>={major}.{minor},<{major}.{minor + 1}", pyproject


def test_the_changelog_has_a_section_for_this_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{CORE}]" in changelog and "## [Unreleased]" in changelog


def test_only_the_metadata_headers_count(install_dist: InstallDist) -> None:
    """A README (the metadata's body) that quotes a requirement does not decide anything."""
    folder = install_dist(
        "rdzv-doc", "1.0", {"doc": "rdzv_doc"}, {"rdzv_doc": good("doc")},
        requires=(f"rdzv-core>={MINOR}",),
    )  # fmt: skip
    metadata = folder / "METADATA"
    metadata.write_text(metadata.read_text() + "\nRequires-Dist: rdzv-core<0.0.1\n")
    rdzv_core.refresh()
    rdzv_core.create_store(params("doc")).close()
