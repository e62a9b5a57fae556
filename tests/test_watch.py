"""What a run is doing, live: RunWatcher's snapshots over real handlers, and ``rdzv
watch`` / ``rdzv join`` as operators run them, piped and on a terminal (a pty)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from rdzv_core import StoreBackend
from rdzv_core.rendezvous import RendezvousHandler
from rdzv_core.rendezvous.status import RunWatcher, render, summary
from rdzv_core.testing import MemoryStore

from .test_handler import FAST
from .test_policy import clean_env, node_command


def handlers(base: MemoryStore, count: int, low: int, high: int) -> list[RendezvousHandler]:
    made = []
    for i in range(count):
        client = base.client()
        made.append(RendezvousHandler("job", client, StoreBackend(client, "job"), low, high,
                                      "10.0.0.1", FAST, attributes={"rack": f"r{i}"}))  # fmt: skip
    return made


def join_all(nodes: list[RendezvousHandler]) -> None:
    threads = [threading.Thread(target=n.next_rendezvous) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_a_run_started_again_from_nothing_shows_its_new_members() -> None:
    """A watcher keeps what completed rounds held; a run started again under the same id
    (its keys gone) must not show the earlier run's members."""
    base = MemoryStore(timeout=timedelta(seconds=10))
    watcher = RunWatcher(base.client(), "job")
    first = handlers(base, 2, 2, 2)
    join_all(first)
    before = {m["node"] for m in watcher.snapshot()["members"]}
    for node in first:
        node.close()
    for key in base.list_keys():
        base.delete_key(key)
    time.sleep(0.01)  # the new round's completion time differs
    again = handlers(base, 2, 2, 2)
    try:
        join_all(again)
        snap = watcher.snapshot()
        assert snap["round"] == 0 and snap["state"] == "complete"
        now = {m["node"] for m in snap["members"]}
        assert now and not now & before, "the earlier run's members are still shown"
        assert snap["history"][0]["outcome"] == "complete"
    finally:
        for node in again:
            node.close()


def test_snapshots_follow_a_run_from_joining_to_closed() -> None:
    base = MemoryStore(timeout=timedelta(seconds=10))
    watcher = RunWatcher(base.client(), "job")
    assert watcher.snapshot()["exists"] is False
    nodes = handlers(base, 3, 2, 3)
    try:
        first = threading.Thread(target=nodes[0].next_rendezvous)
        first.start()
        deadline = time.monotonic() + 10
        while watcher.snapshot().get("joined") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        snap = watcher.snapshot()
        assert snap["state"] == "joining" and snap["nnodes"] == [2, 3]
        join_all(nodes[1:])
        first.join(30)
        snap = watcher.snapshot()
        assert snap["state"] == "complete" and snap["world_size"] == 3
        assert sorted(m["rank"] for m in snap["members"]) == [0, 1, 2]
        assert {m["attributes"]["rack"] for m in snap["members"]} == {"r0", "r1", "r2"}
        assert snap["history"][0]["outcome"] == "complete"
        assert snap["history"][0]["seconds"] is not None
        nodes[2].close()  # its heartbeat stands still
        deadline = time.monotonic() + 15
        while not any(m["stale"] for m in watcher.snapshot()["members"]):
            assert time.monotonic() < deadline, "the silent node was never marked stale"
            time.sleep(0.2)
        while not all(n.num_nodes_waiting() for n in nodes[:2]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert watcher.snapshot()["lost"]
        join_all(nodes[:2])
        snap = watcher.snapshot()
        assert snap["round"] == 1 and snap["world_size"] == 2
        assert len(snap["history"][1]["left"]) == 1 and snap["history"][1]["joined"] == []
        assert "round 0 complete world 3" in render(snap) and "-1 left" in render(snap)
        nodes[0].set_closed()
        assert watcher.snapshot()["state"] == "closed"
    finally:
        for node in nodes:
            node.close()


def test_what_a_node_or_an_operator_named_cannot_drive_the_terminal() -> None:
    base = MemoryStore(timeout=timedelta(seconds=10))
    evil = "job\x1b[2J\x1b]0;pwned\x07"
    client = base.client()
    node = RendezvousHandler(evil, client, StoreBackend(client, evil), 1, 1, "10.0.0.1", FAST)
    try:
        node.next_rendezvous()
        snap = RunWatcher(base.client(), evil).snapshot()
        for text in (render(snap), summary(snap)):
            assert "\x1b" not in text and "\x07" not in text
            assert "job?[2J?]0;pwned?" in text
    finally:
        node.close()


def rdzv(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rdzv_core", *args], capture_output=True,
                          text=True, timeout=60, env=clean_env(), **kwargs)  # fmt: skip


def test_watch_piped_prints_a_line_per_change(tmp_path: Path) -> None:
    endpoint = str(tmp_path / "store")
    nodes = [subprocess.Popen(node_command(endpoint, "watched", 2, 2, ""),
                              stdout=subprocess.PIPE, text=True, env=clean_env())
             for _ in range(2)]  # fmt: skip
    watch = subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", "watch", "--store-type", "file", "--endpoint",
         endpoint, "--run-id", "watched", "--interval", "0.2", "--wait"],
        stdout=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        lines = []
        for line in watch.stdout:
            lines.append(line)
            if "round 0 complete" in line and "2 members" in line:
                break
        nodes[1].kill()
        for line in watch.stdout:
            lines.append(line)
            if "round 1" in line:
                break
        assert any("1 lost" in line or "1 stale" in line for line in lines), lines
        assert len(lines) == len(set(lines)), "a line repeats: only changes are printed"
    finally:
        for proc in [*nodes, watch]:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]


def read_pty(fd: int, until: str, timeout: float = 30) -> str:
    out = ""
    deadline = time.monotonic() + timeout
    while until not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                out += os.read(fd, 65536).decode(errors="replace")
            except OSError:
                break
    return out


def test_watch_on_a_terminal_draws_the_table(tmp_path: Path) -> None:
    endpoint = str(tmp_path / "store")
    node = subprocess.Popen(node_command(endpoint, "tty", 1, 1, ""), stdout=subprocess.PIPE,
                            text=True, env=clean_env())  # fmt: skip
    try:
        assert node.stdout is not None
        node.stdout.readline()  # its round
        primary, secondary = pty.openpty()
        watch = subprocess.Popen(
            [sys.executable, "-m", "rdzv_core", "watch", "--store-type", "file", "--endpoint",
             endpoint, "--run-id", "tty", "--once"],
            stdout=secondary, stderr=secondary, env=clean_env(),
        )  # fmt: skip
        os.close(secondary)
        # (the history's line comes last, and may come in a later read than "history:")
        screen = read_pty(primary, "round 0 complete world 1")
        assert watch.wait(30) == 0
        os.close(primary)
    finally:
        node.kill()
        node.wait(10)
        node.stdout.close()  # type: ignore[union-attr]
    assert screen.startswith("\x1b[H\x1b[2J"), screen[:40]
    assert "rank  node" in screen and "[" in screen and "1 of 1..1" in screen
    assert "round 0 complete world 1" in screen


def test_join_on_a_terminal_keeps_one_live_progress_line(tmp_path: Path) -> None:
    endpoint = str(tmp_path / "store")
    primary, secondary = pty.openpty()
    join = subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", "join", "--store-type", "file", "--endpoint",
         endpoint, "--run-id", "live", "--nnodes", "2"],
        stdout=subprocess.PIPE, stderr=secondary, text=True, env=clean_env(),
    )  # fmt: skip
    os.close(secondary)
    progress = read_pty(primary, "1 joined (min 2, max 2), waiting", 30)
    other = rdzv("join", "--store-type", "file", "--endpoint", endpoint, "--run-id", "live",
                 "--nnodes", "2")  # fmt: skip
    out, _ = join.communicate(timeout=60)
    os.close(primary)
    assert "\rrdzv join: round 0: 1 joined (min 2, max 2), waiting" in progress
    assert "\n" not in progress.split("\r", 1)[1], "the progress line is rewritten, not repeated"
    assert json.loads(out)["world_size"] == 2 and json.loads(other.stdout)["world_size"] == 2


def test_watch_bad_input(tmp_path: Path) -> None:
    endpoint = str(tmp_path / "store")
    unknown = rdzv("watch", "--store-type", "file", "--endpoint", endpoint, "--run-id", "nope")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "No rendezvous state for run 'nope'" in unknown.stderr
    bad = rdzv("watch", "--store-type", "file", "--endpoint", endpoint, "--run-id", "x",
               "--interval", "0")  # fmt: skip
    assert bad.returncode == 2 and "--interval must be 0.1 to 3600 seconds" in bad.stderr
    unreachable = rdzv("watch", "--endpoint", "127.0.0.1:9", "--run-id", "x", "--config",
                       "read_timeout=1")  # fmt: skip
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("rdzv: ")
