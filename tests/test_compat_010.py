"""A store type written against rdzv-core 0.1.0's documented API (tests/compat/rdzv_mine_010:
helpers imported from ``rdzv_core.store``, suite 1 tests with a lambda factory) still works on
today's core: built as a wheel, installed into a fresh virtualenv beside a wheel of today's
rdzv-core, it loads, and its own tests pass the conformance suite, with the deprecation
warnings it should get and no other warning; the cross-process tests, which need a picklable
factory, are reported as left untested with the fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_deprecation import MOVED

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "compat" / "rdzv_mine_010"
#: The plugin imports every helper 0.1.0 had in rdzv_core.store: a warning for each.


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.timeout(600)  # builds, installs and runs a whole suite: minutes on busy cores
def test_a_plugin_written_for_0_1_0_passes_the_suite_on_this_core(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    for project in (ROOT, PLUGIN):
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", wheels, project)  # fmt: skip
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)  # this pip installs into it
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        *sorted(wheels.glob("*.whl")), "pytest>=8", "pytest-timeout>=2.2")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDZV_", "PYTHON"))}

    listed = json.loads(run(venv / "bin" / "rdzv", "plugins", "--json", env=env))
    assert [(p["name"], p["version"], p["status"]) for p in listed] == [("mine", "1.0", "ok")]

    tests = tmp_path / "tests"
    shutil.copytree(PLUGIN / "tests", tests)
    result = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-W", "always", "-rs", tests],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, f"the 0.1.0 plugin failed the suite:\n{out[-5000:]}"
    assert re.search(r"\d+ passed", out.splitlines()[-1]), out[-2000:]
    assert "failed" not in out.splitlines()[-1] and "error" not in out.splitlines()[-1]

    summary = out.split("rdzv conformance suite", 1)[1]
    assert "cross-process: 6 tests, because the store factory is not picklable" in summary
    assert "functools.partial(MyStore, ...)" in summary
    untested = re.findall(r"SKIPPED \[(\d+)\] .*left untested: the store factory is not", out)
    assert sum(map(int, untested)) == 6, out[-3000:]

    warnings = re.findall(r"^\s*(\S+):\d+: (\w+): (.+)$", out.split("warnings summary", 1)[1],
                          re.M)  # fmt: skip
    assert warnings, out[-3000:]
    assert {(Path(where).name, kind) for where, kind, _ in warnings} == {
        ("store.py", "DeprecationWarning")
    }, f"warnings other than the deprecations: {warnings}"
    assert sorted(text for _, _, text in warnings) == [
        f"rdzv_core.store.{name} is deprecated since rdzv-core 0.2.0 and will be removed in "
        "0.4.0: import it from rdzv_core.storekit."
        for name in MOVED
    ]
