"""The rdzv command end to end, as subprocesses, over the tcp store type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from rdzv_plugin_tcp import TCPStore


def rdzv(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_rdzv_join_reports_progress_then_json_and_state_shows_the_run(port: int) -> None:
    host = TCPStore("127.0.0.1", port, is_master=True)
    try:
        args = [
            "join",
            "--endpoint",
            f"127.0.0.1:{port}",
            "--run-id",
            "cli",
            "--nnodes",
            "2",
            "--config",
            "is_host=false,keep_alive_interval=1",
        ]
        first = rdzv(*args)
        assert first.stderr is not None
        progress = first.stderr.readline()
        assert "round 0: 1 joined (min 2, max 2), waiting" in progress
        second = rdzv(*args)
        out1, _ = first.communicate(timeout=60)
        out2, _ = second.communicate(timeout=60)
        results = [json.loads(out1), json.loads(out2)]
        assert sorted(r["rank"] for r in results) == [0, 1]
        assert {r["world_size"] for r in results} == {2}
        assert len({(r["master_addr"], r["master_port"]) for r in results}) == 1

        state = rdzv("state", "--endpoint", f"127.0.0.1:{port}", "--run-id", "cli")
        text, err = state.communicate(timeout=60)
        assert state.returncode == 0, err
        assert "run 'cli': round 0, complete, 2 joined" in text
        assert "rank    0" in text and "rank    1" in text
        as_json = rdzv("state", "--endpoint", f"127.0.0.1:{port}", "--run-id", "cli", "--json")
        run = json.loads(as_json.communicate(timeout=60)[0])
        assert run["world_size"] == 2 and len(run["members"]) == 2
    finally:
        host.close()


def test_rdzv_state_of_an_unknown_run_and_unreachable_store(port: int) -> None:
    host = TCPStore("127.0.0.1", port, is_master=True)
    try:
        out, _ = rdzv("state", "--endpoint", f"127.0.0.1:{port}", "--run-id", "nope").communicate(
            timeout=60
        )
        assert "no rendezvous state" in out
    finally:
        host.close()
    start = time.monotonic()
    proc = rdzv(
        "state", "--endpoint", f"127.0.0.1:{port}", "--run-id", "x", "--config", "read_timeout=3"
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, "a store that cannot be reached is a run-time failure"
    assert time.monotonic() - start < 3 + 5
    lines = err.splitlines()
    assert f"rdzv: connecting to the tcp store at 127.0.0.1:{port} (2 s so far)" in lines[0]
    assert "rdzv: RendezvousConnectionError: The connection to the C10d store has failed." in err
    assert "caused by: StoreConnectionError: Could not connect" in err
    assert "details.:" not in err and "Traceback" not in err


def run_to_end(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = rdzv(*args, env=env)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "details.:" not in err, err
    return proc.returncode, err


def test_cli_exit_codes_and_messages_for_bad_input_and_unreachable_stores(tmp_path: Path) -> None:
    for nodes in ("1", "65"):
        code, err = run_to_end("demo", "--nodes", nodes)
        assert (code, err.strip()) == (2, f"rdzv demo: --nodes must be from 2 to 64, got {nodes}")
    code, err = run_to_end("demo", "--store-type", "nosuch")
    assert code == 2 and "Invalid store type given. Currently only supports" in err
    code, err = run_to_end("demo", "--store-type", "etcd", env={"RDZV_PLUGINS": "tcp"})
    if entry_points(group="rdzv", name="etcd"):
        assert (
            code == 2 and "hint: Store type 'etcd' is installed but not in RDZV_PLUGINS=tcp" in err
        )
        assert "pip install" not in err, "an installed store type needs no install hint"
    else:  # a venv with this plugin and not rdzv-plugin-etcd
        assert code == 2 and "pip install rdzv-plugin-etcd" in err
    code, err = run_to_end("demo", "--store-type", "tcp", env={"RDZV_PLUGINS": "nope"})
    assert code == 2 and "No installed store type is enabled." in err
    assert "hint: Store type 'tcp' is installed but not in RDZV_PLUGINS=nope" in err
    missing = str(tmp_path / "no" / "such" / "dir" / "store")
    code, err = run_to_end("state", "--store-type", "file", "--endpoint", missing, "--run-id", "r")
    assert code == 1 and "caused by: StoreConnectionError" in err and missing in err
    code, err = run_to_end("nosuchcommand")
    assert code == 2 and len(err.splitlines()) == 1 and "invalid choice" in err
    code, err = run_to_end("join", "--endpoint", "h:1", "--run-id", "r")
    assert code == 2 and "the following arguments are required: --nnodes" in err


def test_rdzv_join_rejects_bad_input() -> None:
    proc = rdzv("join", "--endpoint", "h:1", "--run-id", "r", "--nnodes", "3:2")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--nnodes needs 1 <= MIN <= MAX" in err
    proc = rdzv(
        "join", "--endpoint", "h:1", "--run-id", "r", "--nnodes", "1", "--config", "join_timeout=0"
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "The join timeout (0:00:00) must be positive." in err


def test_rdzv_plugins_lists_tcp_and_reports_broken_plugins(tmp_path: Path) -> None:
    proc = rdzv("plugins", "--json", env={"RDZV_PLUGINS": "tcp"})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    (tcp,) = json.loads(out)
    assert tcp["name"] == "tcp" and tcp["status"] == "ok"
    assert tcp["distribution"] == "rdzv-plugin-tcp" and tcp["version"]
    assert set(tcp["capabilities"]) == {
        "cross-process",
        "cross-host",
        "delete",
        "append",
        "list-keys",
        "queues",
    }
    assert tcp["default_read_timeout"] == 60
    assert {"auth_token_file", "max_frame_size", "max_connections"} <= set(tcp["options"])
    text, _ = rdzv("plugins", env={"RDZV_PLUGINS": "tcp"}).communicate(timeout=60)
    assert "tcp options (besides the rendezvous options):" in text
    assert "read_timeout  default 60 s" in text and "max_connections  clients" in text

    site = tmp_path / "site"
    dist = site / "rdzv_broken-9.9.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rdzv-broken\nVersion: 9.9\n")
    (dist / "entry_points.txt").write_text("[rdzv]\nbroken = rdzv_broken_mod\n")
    (site / "rdzv_broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": str(site), "RDZV_PLUGINS": "tcp,broken"}
    proc = rdzv("plugins", env=env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "broken" in out and "rdzv-broken 9.9" in out and "boom at import" in out
    assert "tcp" in out and "ok" in out
    help_text = rdzv("--help", env=env).communicate(timeout=60)[0]
    assert "serve" in help_text and "join" in help_text, "a broken plugin hid other commands"
