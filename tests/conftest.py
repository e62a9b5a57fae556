"""Core tests run with plugin autoloading off; discovery tests turn it on for fake dists."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import rdzv_core
from rdzv_core import StoreBackend
from rdzv_core.rendezvous import HandlerSettings, RendezvousHandler
from rdzv_core.rendezvous.policy import Exclusion, HealthCheck, RankPolicy, RestartBudget
from rdzv_core.testing import MemoryStore

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


@pytest.fixture
def make() -> Iterator[Callable[..., RendezvousHandler]]:
    """Rendezvous handlers over one reference store, closed when the test ends:
    ``make(min, max, policy, health=, exclusion=, host=, settings=, **attributes)``."""
    from .test_handler import FAST  # the handler tests' fast settings

    base = MemoryStore(timeout=timedelta(seconds=10))
    made: list[RendezvousHandler] = []

    def make_handler(
        low: int,
        high: int,
        policy: RankPolicy | None = None,
        *,
        health: HealthCheck | None = None,
        exclusion: Exclusion | None = None,
        host: str = "10.0.0.1",
        settings: HandlerSettings = FAST,
        budget: RestartBudget | None = None,
        **attributes: str,
    ) -> RendezvousHandler:
        client = base.client()
        handler = RendezvousHandler(
            "run", client, StoreBackend(client, "run"), low, high, host, settings,
            policy=policy, attributes=attributes, health=health, exclusion=exclusion,
            budget=budget,
        )  # fmt: skip
        made.append(handler)
        return handler

    make_handler.base = base  # type: ignore[attr-defined]
    yield make_handler
    for handler in made:
        handler.close()
