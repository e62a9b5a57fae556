"""The public API of each distribution, as data: what VERSIONING.md promises to keep.

For each distribution: every name in its public modules' ``__all__`` (a function's
signature; a class's signature and public members; a constant's value), the deprecated
names still served (``__deprecated__``), and where it applies the hook specifications and
their arguments, the conformance suite's classes (tests, fixtures, settings), the ``rdzv``
commands it adds and their flags, and the tcp wire protocol's numbers.

``api/<distribution>.json`` holds the surface as committed; ``api/released/<version>/``
holds each release's. tests/test_public_api.py compares them with the live surface:

    python tools/public_api.py --write      # after a deliberate change (+ a CHANGELOG line)
    python tools/public_api.py --release    # at a release: copy the surface to api/released/
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import json
import os
import shutil
import sys
import types
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "api"

#: The public modules of each distribution (VERSIONING.md lists the same).
PUBLIC_MODULES = {
    "rdzv-core": [
        "rdzv_core",
        "rdzv_core.deprecation",
        "rdzv_core.events",
        "rdzv_core.hookspecs",
        "rdzv_core.rendezvous",
        "rdzv_core.store",
        "rdzv_core.storekit",
        "rdzv_core.testing",
        "rdzv_core.testing.tls",
        "rdzv_core.testing.children",
    ],
    "rdzv-plugin-tcp": ["rdzv_plugin_tcp"],
    "rdzv-plugin-file": ["rdzv_plugin_file"],
    "rdzv-plugin-etcd": ["rdzv_plugin_etcd", "rdzv_plugin_etcd.testing"],
    "rdzv-plugin-redis": ["rdzv_plugin_redis", "rdzv_plugin_redis.testing"],
    "rdzv-torch": ["rdzv_torch"],
}
DISTRIBUTIONS = list(PUBLIC_MODULES)
_OURS = ("rdzv_core", "rdzv_plugin_", "rdzv_torch")


def signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def parameters(obj: Any) -> list[str]:
    """The names a caller may pass (``**`` when it takes any keyword)."""
    try:
        found = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    return ["**" if p.kind is p.VAR_KEYWORD else p.name for p in found]


def describe(obj: Any) -> dict[str, Any]:
    """One public name: its kind and what a caller relies on."""
    if isinstance(obj, types.UnionType) or getattr(obj, "__module__", None) == "typing":
        return {"kind": "type alias", "value": repr(obj)}
    if inspect.isclass(obj):
        entry: dict[str, Any] = {"kind": "class", "bases": _bases(obj)}
        if issubclass(obj, enum.Enum):
            entry["members"] = {m.name: repr(m.value) for m in obj}
            return entry
        if not issubclass(obj, BaseException):
            entry["signature"] = signature(obj)
            entry["parameters"] = parameters(obj)
        entry["members"] = _members(obj)
        return entry
    if callable(obj):
        return {"kind": "function", "signature": signature(obj), "parameters": parameters(obj)}
    if isinstance(obj, (bool, int, float, str, bytes)) or obj is None:
        return {"kind": "constant", "value": repr(obj)}
    if isinstance(obj, (frozenset, set, tuple)):
        return {"kind": "constant", "value": repr(sorted(obj, key=repr))}
    return {"kind": type(obj).__name__}


def _bases(cls: type) -> list[str]:
    return [f"{b.__module__}.{b.__qualname__}" for b in cls.__bases__]


def _members(cls: type) -> dict[str, str]:
    """Public attributes that our own classes in ``cls``'s hierarchy define."""
    members: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith(_OURS):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name.startswith("test_"):
                continue
            if isinstance(value, property):
                members[name] = "property"
            elif isinstance(value, (staticmethod, classmethod)):
                members[name] = signature(value.__func__)
            elif inspect.isfunction(value):
                abstract = " (abstract)" if getattr(value, "__isabstractmethod__", False) else ""
                members[name] = signature(value) + abstract
            elif _is_fixture(value):
                continue  # listed by the suite section
            else:
                members[name] = f"attribute {type(value).__name__}"
    return dict(sorted(members.items()))


def _is_fixture(value: Any) -> bool:
    return hasattr(value, "_pytestfixturefunction") or type(value).__name__ == (
        "FixtureFunctionDefinition"
    )


def module_surface(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", [])
    surface = {name: describe(getattr(module, name)) for name in sorted(names)}
    deprecated = getattr(module, "__deprecated__", ())
    return {
        "names": surface,
        "deprecated": {d.name: f"{d.since} -> removed in {d.removal}" for d in deprecated},
    }


def _exists(module_name: str) -> bool:
    """Whether the module is there (an older release, read with this tool, lacks some)."""
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        return False
    return True


def hooks() -> dict[str, Any]:
    from rdzv_core import hookspecs

    found = {}
    for name, function in vars(hookspecs).items():
        options = getattr(function, f"{hookspecs.PROJECT}_spec", None)
        if options is not None:
            found[name] = {
                "arguments": list(inspect.signature(function).parameters),
                "options": {k: v for k, v in sorted(options.items()) if v},
            }
    return dict(sorted(found.items()))


def suite() -> dict[str, Any]:
    import rdzv_core.testing as testing

    classes = {}
    for name in testing.__all__:
        cls = getattr(testing, name)
        if not (inspect.isclass(cls) and name.endswith(("Conformance", "Scenarios"))):
            continue
        attributes = dir(cls)
        classes[name] = {
            "tests": sorted(a for a in attributes if a.startswith("test_")),
            "fixtures": sorted(
                a for a in attributes if _is_fixture(inspect.getattr_static(cls, a, None))
            ),
        }
    return {"SUITE_VERSION": getattr(testing, "SUITE_VERSION", "1"), "classes": classes}


def cli_commands(distribution: str) -> dict[str, Any]:
    """The ``rdzv`` commands ``distribution`` adds, with their flags and defaults."""
    parser = argparse.ArgumentParser(prog="rdzv")
    sub = parser.add_subparsers()
    if distribution == "rdzv-core":
        from rdzv_core.cli import build_parser

        saved = os.environ.get("RDZV_DISABLE_PLUGIN_AUTOLOAD")
        os.environ["RDZV_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        import rdzv_core

        rdzv_core.refresh()
        try:
            parser = build_parser()
        finally:
            if saved is None:
                del os.environ["RDZV_DISABLE_PLUGIN_AUTOLOAD"]
            else:
                os.environ["RDZV_DISABLE_PLUGIN_AUTOLOAD"] = saved
            rdzv_core.refresh()
    else:
        for ep in entry_points(group="rdzv"):
            if ep.dist is not None and ep.dist.name == distribution:
                plugin = ep.load()
                add = getattr(plugin, "rdzv_cli_commands", None)
                if add is not None:
                    add(sub)
    return _commands(parser)


def _commands(parser: argparse.ArgumentParser) -> dict[str, Any]:
    commands: dict[str, Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                commands[name] = {
                    "|".join(a.option_strings) or a.dest: repr(a.default)
                    for a in command._actions
                    if not isinstance(a, argparse._HelpAction)
                }
    return dict(sorted(commands.items()))


def tcp_protocol() -> dict[str, Any]:
    from rdzv_plugin_tcp import protocol

    numbers = ["MAGIC", "VERSION", "ACCEPTED_VERSIONS", "AUTH_CONTEXT", "NONCE_SIZE"]
    numbers += ["SERVER_ID_SIZE", "HANDSHAKE_FRAME_LIMIT"]
    return {
        "constants": {
            n: describe(getattr(protocol, n))["value"] for n in numbers if hasattr(protocol, n)
        },
        "ops": {str(code): name for code, name in sorted(protocol.OP_NAMES.items())},
        "statuses": {
            n: getattr(protocol, n)
            for n in ("OK", "TIMEOUT", "VALUE_ERROR", "FAILED", "ALIVE")
            if hasattr(protocol, n)
        },
    }


def surface(distribution: str) -> dict[str, Any]:
    """Everything ``distribution`` promises, as data."""
    result: dict[str, Any] = {
        "distribution": distribution,
        "version": version(distribution),
        "modules": {m: module_surface(m) for m in PUBLIC_MODULES[distribution] if _exists(m)},
        "cli": cli_commands(distribution),
    }
    if distribution == "rdzv-core":
        result["hooks"] = hooks()
        result["suite"] = suite()
    if distribution == "rdzv-plugin-tcp":
        result["protocol"] = tcp_protocol()
    return result


def path_for(distribution: str, release: str | None = None) -> Path:
    folder = API if release is None else API / "released" / release
    return folder / f"{distribution}.json"


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("distributions", nargs="*", default=DISTRIBUTIONS)
    parser.add_argument("--write", action="store_true", help="write api/<distribution>.json")
    parser.add_argument(
        "--release", action="store_true", help="copy api/*.json to api/released/<version>/"
    )
    parser.add_argument("--out", type=Path, help="write the surfaces to this folder instead")
    args = parser.parse_args()
    for distribution in args.distributions:
        data = surface(distribution)
        if args.release:
            target = path_for(distribution, data["version"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path_for(distribution), target)
            print(f"released: {target.relative_to(ROOT)}")
        elif args.write or args.out:
            target = (args.out / f"{distribution}.json") if args.out else path_for(distribution)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(dump(data))
            print(f"wrote {target}")
        else:
            sys.stdout.write(dump(data))


if __name__ == "__main__":
    main()
