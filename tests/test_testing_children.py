"""rdzv_core.testing.children: logged child processes for tests and benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

from rdzv_core.testing.children import log_tail, port_was_taken, spawn_logged


def test_a_child_logs_both_streams_and_its_tail_is_what_it_said_last(tmp_path: Path) -> None:
    log = str(tmp_path / "child.log")
    code = "import sys; print('x' * 5000); print('on stderr', file=sys.stderr)"
    proc = spawn_logged([sys.executable, "-c", code], log)
    assert proc.wait(30) == 0
    tail = log_tail(log, 100)
    assert tail.endswith("on stderr") and len(tail) <= 100
    assert log_tail(str(tmp_path / "missing.log")) == ""


def test_only_an_exit_over_a_taken_port_counts_as_one(tmp_path: Path) -> None:
    log = str(tmp_path / "child.log")
    said = "print('listen tcp 127.0.0.1:1: bind: Address already in use'); exit(1)"
    proc = spawn_logged([sys.executable, "-c", said], log)
    proc.wait(30)
    assert port_was_taken(proc, log)
    other = spawn_logged([sys.executable, "-c", "exit(1)"], str(tmp_path / "other.log"))
    other.wait(30)
    assert not port_was_taken(other, str(tmp_path / "other.log"))
    running = spawn_logged([sys.executable, "-c", "import time; time.sleep(30)"], log)
    try:
        assert not port_was_taken(running, log)  # still running: it has not failed
    finally:
        running.kill()
        running.wait()
