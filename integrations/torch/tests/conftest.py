from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import torch.distributed as dist
from torch_helpers import free_port


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def torch_server() -> Iterator[dist.TCPStore]:
    """torch's TCPStore server (libuv) on a free port, hosted by the test process."""
    server = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False,
        timeout=timedelta(seconds=60), use_libuv=True,
    )  # fmt: skip
    yield server
    del server
