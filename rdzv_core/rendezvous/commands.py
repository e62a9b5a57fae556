"""The ``rdzv`` subcommands that drive a rendezvous."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the rendezvous subcommands to ``rdzv``."""
