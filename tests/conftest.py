"""Core tests run with plugin autoloading off; discovery tests turn it on for fake dists."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import rdzv_core

#: A plugin distribution used as test data (tests/test_compat_010.py installs and runs it).
collect_ignore = ["compat"]


@pytest.fixture(autouse=True)
def no_autoload(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RDZV_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("RDZV_PLUGINS", raising=False)
    rdzv_core.refresh()
    yield
    rdzv_core.refresh()


InstallDist = Callable[..., Path]


@pytest.fixture
def install_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstallDist:
    """Install a fake distribution the way pip lays it out: a package module and a
    ``<name>-<version>.dist-info`` folder with METADATA and entry_points.txt, on sys.path.
    Turns autoloading on, restricted to the store types given in ``RDZV_PLUGINS``."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("RDZV_DISABLE_PLUGIN_AUTOLOAD")
    names: list[str] = []
    added: list[str] = []

    def install(
        dist: str,
        version: str,
        entry_points: dict[str, str],
        modules: dict[str, str],
        requires: tuple[str, ...] = (),
        group: str = "rdzv",
    ) -> Path:
        folder = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        folder.mkdir()
        requirements = "".join(f"Requires-Dist: {r}\n" for r in requires)
        (folder / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n{requirements}"
        )
        lines = [f"[{group}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
        (folder / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            added.append(module)
        names.extend(entry_points)
        monkeypatch.setenv("RDZV_PLUGINS", ",".join(names))
        rdzv_core.refresh()
        return folder

    yield install  # type: ignore[misc]
    for module in added:
        sys.modules.pop(module, None)
