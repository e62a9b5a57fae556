"""Build every distribution as a package index would receive it, and check it.

- a wheel and an sdist per distribution (rdzv-core and each plugin), built offline;
- each sdist holds its own distribution's files only, and a LICENSE;
- each wheel holds a LICENSE and its package's py.typed;
- ``twine check`` passes (metadata and README render);
- in a fresh virtualenv, installing only rdzv-plugin-tcp from these wheels gives a working
  ``tcp`` store type: ``rdzv plugins`` shows it ok, and ``create_backend`` works.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = {
    "rdzv_core": ROOT,
    **{f"rdzv_plugin_{p.name}": p for p in sorted((ROOT / "plugins").iterdir())},
    "rdzv_torch": ROOT / "integrations" / "torch",
}


def run(*args: str | Path, **kw: object) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if result.returncode:
        sys.exit(f"check_dist: {' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}")
    return str(result.stdout)


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="rdzv-dist-"))
    for package, project in PROJECTS.items():
        run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out / package, project)
        (sdist,) = (out / package).glob("*.tar.gz")
        (wheel,) = (out / package).glob("*.whl")
        with tarfile.open(sdist) as tar:
            names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
        foreign = [n for n in names if n.startswith(("plugins/", "bench/", "integrations/"))]
        assert not foreign, f"{sdist.name} carries other distributions' files: {foreign[:5]}"
        assert "LICENSE" in names, f"{sdist.name} has no LICENSE"
        assert any(n.startswith(f"{package}/") for n in names), f"{sdist.name} lacks {package}/"
        with zipfile.ZipFile(wheel) as whl:
            files = whl.namelist()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in files), (
            f"{wheel.name}: no LICENSE"
        )
        assert f"{package}/py.typed" in files, f"{wheel.name}: no py.typed"
        print(f"built {sdist.name} ({len(names)} files) and {wheel.name}")
    run(sys.executable, "-m", "twine", "check", "--strict", *sorted(out.glob("*/*")))
    print("twine check: passed")

    venv = out / "venv"
    run(sys.executable, "-m", "venv", venv)
    deps = out / "deps"
    requirements = ["pluggy>=1.3", "packaging>=22", "prometheus-client>=0.17"]
    run(venv / "bin/pip", "download", "--quiet", "--dest", deps, *requirements)
    links = [f"--find-links={d}" for d in [deps, *(out / p for p in PROJECTS)]]
    run(venv / "bin/pip", "install", "--quiet", "--no-index", *links, "rdzv-plugin-tcp")
    installed = run(venv / "bin/pip", "list", "--format=json")
    names = sorted(d["name"] for d in json.loads(installed))
    assert "rdzv-plugin-file" not in names and "rdzv-core" in names, names
    report = json.loads(run(venv / "bin/rdzv", "plugins", "--json"))
    assert [(p["name"], p["status"]) for p in report] == [("tcp", "ok")], report
    smoke = (
        "from rdzv_core import RendezvousParameters, create_backend\n"
        "params = RendezvousParameters('c10d', '127.0.0.1:0', 'dist-check', 1, 1, is_host='true')\n"
        "backend, store = create_backend(params)\n"
        "state, token, ok = backend.set_state(b'hello')\n"
        "assert ok and backend.get_state()[0] == b'hello'\n"
        "store.close()\n"
        "print('create_backend over tcp: ok')\n"
    )
    print(run(venv / "bin/python", "-c", smoke, cwd=out).strip())
    missing = subprocess.run(
        [venv / "bin/rdzv", "join", "--store-type", "redis", "--endpoint", "h:1", "--run-id", "r",
         "--nnodes", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    hint = (
        "hint: Store type 'redis' is provided by rdzv-plugin-redis: pip install rdzv-plugin-redis"
    )
    assert missing.returncode == 2 and hint in missing.stderr, missing.stderr
    print("a store type that is not installed: exit 2 and the pip install hint")
    print(f"rdzv plugins in a fresh venv with only rdzv-plugin-tcp: {report[0]['name']} ok")


if __name__ == "__main__":
    main()
