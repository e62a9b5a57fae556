"""Run the tests on every Python version the distributions claim (part of ``make test``).

The claimed versions are the ``Programming Language :: Python :: 3.X`` classifiers; every
distribution must claim the same ones, and its ``requires-python`` must start at the oldest.
``make unit`` runs every distribution's tests on the default interpreter; this runs
on each other claimed version, in its own virtualenv (``.venv-3.X``, made on first use), the
conformance suites of rdzv-core (MemoryStore), tcp and file, the CLI's error paths, and the
rest of rdzv-core's tests but the slowest (the handler's and the policies' timing
scenarios, and the README's store type, a twin of the 0.1.0 compatibility test, which runs
everywhere) and the browser test (selenium is in the default interpreter's venv only).

A claimed version with no interpreter on this machine is a failure, not a skip: the
interpreter is looked for as ``python3.X`` on PATH and in pyenv's versions folder.

    python tools/matrix.py [--list] [VERSION ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = [ROOT, *sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))]
PROJECTS += sorted(p.parent for p in ROOT.glob("integrations/*/pyproject.toml"))
#: What runs on the versions besides the default one (relative to the repository).
MATRIX_DISTS = [".", "plugins/tcp", "plugins/file"]
MATRIX_TESTS = [
    "tests",
    "--ignore=tests/test_handler.py",
    "--ignore=tests/test_readme_store_type.py",
    # the rendezvous policy scenarios: timing-heavy, like the handler's, on the same code
    "--ignore=tests/test_policy.py",
    "--ignore=tests/test_spares.py",
    "--ignore=tests/test_rank_orders.py",
    # the browser test needs selenium, which only the default interpreter's venv has
    "--deselect=tests/test_dashboard.py::test_the_page_in_chromium_shows_ranks_escapes_nodes_and_marks_a_lost_one",
    "plugins/tcp/tests/test_tcp_conformance.py",
    "plugins/tcp/tests/test_cli.py",
    "plugins/tcp/tests/test_versions.py",
    "plugins/tcp/tests/test_deprecations.py",
    "plugins/tcp/tests/test_keyspace.py",
    "plugins/file/tests/test_file_conformance.py",
]
#: The same, by distribution name (the public-API check reads it).
MATRIX_DISTRIBUTIONS = ["rdzv-core", "rdzv-plugin-tcp", "rdzv-plugin-file"]
TEST_TOOLS = [
    "pytest>=8",
    "pytest-timeout>=2.2",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "hatchling>=1.18",
]

_CLASSIFIER = re.compile(r'"Programming Language :: Python :: (3\.\d+)"')
_REQUIRES = re.compile(r'^requires-python\s*=\s*">=(3\.\d+)"', re.M)


def claimed_versions() -> list[str]:
    """The versions every distribution claims; a mismatch between them is an error."""
    claims: dict[str, tuple[str, ...]] = {}
    for project in PROJECTS:
        text = (project / "pyproject.toml").read_text()
        versions = tuple(sorted(_CLASSIFIER.findall(text), key=_key))
        requires = _REQUIRES.search(text)
        name = str(project.relative_to(ROOT)) if project != ROOT else "rdzv-core"
        if not versions:
            sys.exit(f"matrix: {name} claims no Python version in its classifiers")
        if requires is None or requires.group(1) != versions[0]:
            sys.exit(
                f'matrix: {name}\'s requires-python must be ">={versions[0]}", the oldest '
                "version its classifiers claim"
            )
        claims[name] = versions
    if len(set(claims.values())) != 1:
        listed = "; ".join(f"{n}: {', '.join(v)}" for n, v in claims.items())
        sys.exit(f"matrix: the distributions claim different Python versions ({listed})")
    claimed = list(next(iter(claims.values())))
    root = (ROOT / "pyproject.toml").read_text()
    oldest = claimed[0]
    checks = {
        "[tool.mypy] python_version": f'python_version = "{oldest}"',
        "[tool.ruff] target-version": f'target-version = "py{oldest.replace(".", "")}"',
    }
    for setting, line in checks.items():
        if line not in root:
            sys.exit(
                f"matrix: pyproject.toml's {setting} must be the oldest claimed Python ({line})"
            )
    return claimed


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def find_interpreter(version: str) -> str | None:
    """A working ``python<version>``: on PATH, else in pyenv's versions folder."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(
        glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")),
        reverse=True,
    )
    for candidate in candidates:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def ensure_venv(version: str, interpreter: str) -> Path:
    """``.venv-<version>`` with the matrix's distributions installed editable; rebuilt
    when any pyproject.toml changes."""
    venv = ROOT / f".venv-{version}"
    digest = hashlib.sha256()
    for project in PROJECTS:
        digest.update((project / "pyproject.toml").read_bytes())
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    run([interpreter, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run([*pip, "--upgrade", "pip"])
    editable = [arg for dist in MATRIX_DISTS for arg in ("-e", str(ROOT / dist))]
    run([*pip, *TEST_TOOLS, *editable])
    stamp.write_text(digest.hexdigest())
    return venv


def run(command: list[str]) -> None:
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode:
        sys.exit(f"matrix: {' '.join(command)} failed (exit {result.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", help="only these (default: every claimed one)")
    parser.add_argument("--list", action="store_true", help="print the claimed versions")
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist workers per version")
    args = parser.parse_args()
    claimed = claimed_versions()
    if args.list:
        print(" ".join(claimed))
        return
    unclaimed = sorted(set(args.versions) - set(claimed))
    if unclaimed:
        parser.error(f"not claimed: {', '.join(unclaimed)} (claimed: {', '.join(claimed)})")
    default = f"{sys.version_info[0]}.{sys.version_info[1]}"
    versions = args.versions or [v for v in claimed if v != default]
    found = {v: find_interpreter(v) for v in versions}
    interpreters = {v: path for v, path in found.items() if path is not None}
    missing = [v for v in versions if v not in interpreters]
    if missing:
        sys.exit(
            f"matrix: no interpreter for claimed Python {', '.join(missing)} (looked for "
            "python3.X on PATH and in pyenv's versions): install it, or stop claiming it"
        )
    # The virtualenvs are made side by side (downloads and disk); the tests run one version
    # at a time (on --workers workers), since many of them measure time.
    with concurrent.futures.ThreadPoolExecutor(len(versions) or 1) as pool:
        venvs = dict(zip(versions, pool.map(lambda v: ensure_venv(v, interpreters[v]), versions)))
    results = []
    for version in versions:
        venv = venvs[version]
        print(f"== Python {version} ({interpreters[version]})", flush=True)
        started = time.monotonic()
        tests = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                *(["-n", str(args.workers), "--dist", "worksteal"] if args.workers > 1 else []),
                *MATRIX_TESTS,
            ],
            cwd=ROOT,
            env={**os.environ, "RDZV_API_DISTRIBUTIONS": ",".join(MATRIX_DISTRIBUTIONS)},
        )
        results.append((version, tests.returncode, time.monotonic() - started))
    print(
        "== matrix: "
        + ", ".join(f"{v} {'ok' if rc == 0 else 'FAILED'} ({s:.0f} s)" for v, rc, s in results)
    )
    if any(rc for _, rc, _ in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
