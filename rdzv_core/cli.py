"""The ``rdzv`` command: ``rdzv plugins`` here, more subcommands from the handler and plugins."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from .errors import PluginConflictError, PluginLoadError
from .registry import PluginInfo, default_registry

__all__ = ["build_parser", "main"]

log = logging.getLogger("rdzv")


def _cmd_plugins(args: argparse.Namespace) -> int:
    report = default_registry().plugins()
    if args.json:
        print(json.dumps([p.to_dict() for p in report], indent=2))
    else:
        _print_plugins(report)
        if not _print_rank_orders():
            return 1
    return 0 if all(p.status == "ok" for p in report) else 1


def _print_rank_orders() -> bool:
    """The rank orders line (``rank_order=``); False when a rank order plugin is broken."""
    try:
        sources = default_registry().rank_order_sources()
    except (PluginLoadError, PluginConflictError) as e:
        print(f"\nrank orders: broken: {e}")
        return False
    listed = ", ".join(f"{name} ({where})" for name, where in sources.items())
    print(f"\nrank orders (rank_order=...): {listed}")
    return True


def _print_plugins(report: list[PluginInfo]) -> None:
    if not report:
        print("No store types are installed (pip install rdzv-plugin-tcp gives the default one).")
        return
    rows = [("STORE TYPE", "STATUS", "DISTRIBUTION", "CAPABILITIES", "DESCRIPTION")]
    for p in report:
        origin = f"{p.distribution} {p.version}" if p.version else str(p.distribution)
        detail = p.description if p.status == "ok" else p.error
        rows.append((p.name, p.status, origin, ", ".join(p.capabilities) or "-", detail or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    for p in report:
        if p.status == "ok" and (p.options or p.default_read_timeout):
            print(f"\n{p.name} options (besides the rendezvous options):")
            print(f"  read_timeout  default {p.default_read_timeout} s")
            for key, help_text in sorted(p.options.items()):
                print(f"  {key}  {help_text}")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``rdzv`` parser: core commands plus every loaded plugin's commands."""
    parser = _Parser(
        prog="rdzv", description="Rendezvous for distributed jobs: inspect, serve and join."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    plugins = sub.add_parser("plugins", help="list the installed store types and their status")
    plugins.add_argument("--json", action="store_true", help="print machine-readable JSON")
    plugins.set_defaults(run=_cmd_plugins)

    from .rendezvous.commands import add_commands

    add_commands(sub)

    manager = default_registry().load_all()
    for impl in manager.hook.rdzv_cli_commands.get_hookimpls():
        try:
            impl.function(sub)
        except Exception:
            log.exception("plugin %r failed to add its commands", impl.plugin_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rdzv`` with ``argv`` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        status: int = run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: say so in one line unless asked for the traceback
        if args.verbose > 1:
            raise
        print(
            f"rdzv: internal error: {type(e).__name__}: {e} (rerun with -vv for the traceback)",
            file=sys.stderr,
        )
        return 1
    return status
