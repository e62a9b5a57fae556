"""The README's "Writing a store type" runs verbatim: its code blocks are written to a fresh
project, installed (a real wheel build, into a target folder), and its tests, which run the
whole conformance suite, pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section_files() -> dict[str, str]:
    """Each code block of the section whose first line names its file (``# path``)."""
    text = README.read_text()
    start = text.index("## Writing a store type")
    section = text[start : text.index("\n## ", start + 1)]
    files = {}
    for block in re.findall(r"```(?:python|toml)\n(.*?)```", section, re.S):
        first, _, body = block.partition("\n")
        if re.fullmatch(r"# [\w./]+\.(py|toml)", first):
            files[first[2:]] = body
    return files


def test_the_section_names_four_files() -> None:
    assert sorted(section_files()) == [
        "my_store/plugin.py",
        "my_store/store.py",
        "pyproject.toml",
        "tests/test_sqlite.py",
    ]


@pytest.mark.timeout(600)  # builds, installs and runs a whole suite: minutes on busy cores
def test_the_readme_store_type_builds_installs_and_passes_the_suite(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for name, body in section_files().items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    (project / "my_store" / "__init__.py").write_text("")
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, f"the README's project did not install: {install.stderr}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = run.stdout[-3000:]
    assert run.returncode == 0, f"the README's store type failed the suite:\n{summary}"
    assert re.search(r"\d+ passed", summary), summary
    assert "rdzv conformance suite" in summary and "leases: not declared by sqlite" in summary
    plugins = subprocess.run(
        [sys.executable, "-m", "rdzv_core", "plugins", "--json"],
        env={**env, "RDZV_PLUGINS": "sqlite"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"name": "sqlite"' in plugins.stdout and '"status": "ok"' in plugins.stdout
