"""Picklable openers for spawned processes, and free ports."""

from __future__ import annotations

import socket
from datetime import timedelta

import torch.distributed as dist
from rdzv_torch import from_torch_store
from rdzv_torch.stores import TorchBackedStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torch_tcp_client(port: int) -> TorchBackedStore:
    """A new rdzv client of the torch TCPStore server on ``port``."""
    client = dist.TCPStore(
        "127.0.0.1", port, is_master=False, timeout=timedelta(seconds=60), use_libuv=True
    )
    return from_torch_store(client)
