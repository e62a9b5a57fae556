"""redis store: op latency against raw redis-py doing the same work, and blocked-get
wake-up latency for every store type, side by side in one run.

- ops: median µs of get / set / add / compare_set through RedisStore, and of the same
  commands or the same Lua script sent with raw redis-py (EVALSHA), interleaved op by op;
- wake-up: a get blocked in a child process, woken by a set from this process; the time
  from the set's call to the child's wake-up (both read time.time() on one machine). From
  the call, not the return: a server may wake the reader before it answers the writer.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

from common import free_port, median, table, time_op

COUNT = 2000


def start_redis() -> tuple[subprocess.Popen[bytes], int, str]:
    data = tempfile.mkdtemp(prefix="rdzv-bench-redis-")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", data],
        stdout=subprocess.DEVNULL,
    )
    import redis

    probe = redis.Redis(port=port)
    for _ in range(200):
        try:
            probe.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    return proc, port, data


# The 0.2.0 scripts (no epoch, write count or operation record): what a write cost before
# failover retries and data-loss detection, for the last column.
OLD_ADD = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return value
"""


def op_latency(port: int) -> str:
    import itertools

    import redis
    from rdzv_plugin_redis import RedisStore
    from rdzv_plugin_redis.store import _ADD, _CAS, _SET

    ours = RedisStore(host="127.0.0.1", port=port, prefix="b/")
    raw = redis.Redis(host="127.0.0.1", port=port)
    scripts = {n: raw.register_script(s) for n, s in (("set", _SET), ("add", _ADD), ("cas", _CAS))}
    old_add = raw.register_script(OLD_ADD)
    epoch, meta, keyset = ours._epoch, ours._meta, ours._keyset
    record = [b""]  # the raw client keeps its operation record as the store does
    ids = itertools.count(1)

    def raw_once(name: str, keys: list[str], args: list[object]) -> None:
        reply = scripts[name](
            keys=[*meta, *keys, "b/\x00op/raw/1"], args=[epoch, *args, next(ids), record[0]]
        )
        if reply[-1]:
            record[0] = reply[-1]

    ours.set("k", "v")
    raw.set("b/k", "v")
    raw_ops = {
        "get": lambda: raw.mget([*meta, "b/k"]),
        "set (script)": lambda: scripts["set"](
            keys=[*meta, "b/k", keyset], args=[epoch, "v", "ch"]
        ),
        "add (script)": lambda: raw_once("add", ["b/n", keyset], [1, "ch"]),
        "compare_set (script)": lambda: raw_once("cas", ["b/k", keyset], ["v", "v", "ch", "0"]),
    }
    our_ops = {
        "get": lambda: ours.get("k"),
        "set (script)": lambda: ours.set("k", "v"),
        "add (script)": lambda: ours.add("n", 1),
        "compare_set (script)": lambda: ours.compare_set("k", "v", "v"),
    }
    samples: dict[str, dict[str, list[float]]] = {n: {"ours": [], "raw": []} for n in raw_ops}
    old: list[float] = []
    for _ in range(5):
        for name in raw_ops:
            samples[name]["ours"] += time_op(our_ops[name], COUNT // 5)
            samples[name]["raw"] += time_op(raw_ops[name], COUNT // 5)
        old += time_op(lambda: old_add(keys=["b/m", "b/\x00keys"], args=[1, "ch"]), COUNT // 5)
    rows = []
    for name, s in samples.items():
        o, r = median(s["ours"]), median(s["raw"])
        rows.append([name, f"{o:.0f}", f"{r:.0f}", f"{o / r:.2f}"])
    ours.close()
    return (
        "### redis store: median latency vs raw redis-py (same commands)\n\n"
        + table(["op", "RedisStore µs", "raw redis-py µs", "ratio (target ≤ 1.1)"], rows)
        + f"\n\nThe 0.2.0 add script (no epoch check, write count or operation record), raw: "
        f"{median(old):.0f} µs."
    )


def _waiter(kind: str, target: Any, ready: Any, out: Any) -> None:
    store = _open(kind, target)
    for i in range(30):
        ready.put(i)
        store.get(f"wake/{i}")
        out.put(time.time())
    store.close()


def _open(kind: str, target: Any) -> Any:
    if kind == "redis":
        from rdzv_plugin_redis import RedisStore

        return RedisStore(host="127.0.0.1", port=target, prefix="w/", timeout=timedelta(seconds=30))
    if kind == "tcp":
        from rdzv_plugin_tcp import TCPStore

        return TCPStore("127.0.0.1", target, timeout=timedelta(seconds=30))
    if kind == "file":
        from rdzv_plugin_file import FileStore

        return FileStore(target, timeout=timedelta(seconds=30))
    from rdzv_plugin_etcd import EtcdStore

    return EtcdStore("127.0.0.1", target, prefix="/w/", timeout=timedelta(seconds=30))


def wakeups(kind: str, target: Any) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_waiter, args=(kind, target, ready, out))
    child.start()
    writer = _open(kind, target)
    delays = []
    for i in range(30):
        ready.get(timeout=60)
        time.sleep(0.05)  # let the child block
        called = time.time()
        writer.set(f"wake/{i}", "x")
        delays.append((out.get(timeout=60) - called) * 1000)
    child.join(30)
    writer.close()
    return delays


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.parse_known_args()
    proc, port, data = start_redis()
    parts = []
    try:
        parts.append(op_latency(port))
        targets: dict[str, Any] = {"redis": port}
        served = subprocess.Popen(
            [sys.executable, "-m", "rdzv_core", "serve", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert served.stdout is not None
        targets["tcp"] = int(served.stdout.readline().rsplit(":", 1)[1])
        store_dir = tempfile.mkdtemp(prefix="rdzv-bench-file-")
        targets["file"] = f"{store_dir}/store"
        etcd = None
        if shutil.which("etcd"):
            from rdzv_plugin_etcd.testing import start_etcd

            etcd = start_etcd()
            targets["etcd"] = etcd.port
        rows = []
        for kind, target in targets.items():
            d = sorted(wakeups(kind, target))
            p99 = d[min(len(d) - 1, int(0.99 * len(d)))]
            rows.append([kind, f"{statistics.median(d):.2f}", f"{p99:.2f}", f"{max(d):.2f}"])
        served.kill()
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(store_dir, ignore_errors=True)
        parts.append(
            "### blocked get woken by a set from another process: ms from the set's call "
            "to the wake-up (30 trials)\n\n" + table(["store type", "p50", "p99", "max"], rows)
        )
    finally:
        proc.kill()
        shutil.rmtree(data, ignore_errors=True)
    text = "\n\n".join(parts)
    print(text)
    return text


if __name__ == "__main__":
    main()
