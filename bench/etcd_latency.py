"""EtcdStore against raw etcd3gw calls on the same etcd cluster (3 members), interleaved:
the store, given every member and with its failover retries and exactly-once records in
place, must add no avoidable round trips (target: within 1.1x of the raw client, which
talks to the same first member)."""

from __future__ import annotations

import base64
from typing import Any

import requests
from common import median, table, time_op
from etcd3gw import client as etcd_client
from rdzv_plugin_etcd import EtcdStore
from rdzv_plugin_etcd.testing import start_etcd_cluster


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw_add(c: Any, key: bytes) -> int:
    """An increment with the raw client: range, then a txn compared on mod_revision."""
    while True:
        reply = c.post(c.get_url("/kv/range"), json={"key": b64(key)})
        kvs = reply.get("kvs") or []
        value = int(base64.b64decode(kvs[0]["value"])) if kvs else 0
        txn = {
            "compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL",
                         "mod_revision": kvs[0]["mod_revision"] if kvs else "0"}],
            "success": [{"request_put": {"key": b64(key), "value": b64(str(value + 1).encode())}}],
        }  # fmt: skip
        if c.transaction(txn).get("succeeded", False):
            return value + 1


def main(rounds: int = 5, count: int = 300) -> str:
    etcd = start_etcd_cluster(3)
    try:
        first, *others = [("127.0.0.1", m.port) for m in etcd.members]
        store = EtcdStore(*first, members=others, prefix="/bench/")
        session = requests.Session()
        session.trust_env = False
        raw = etcd_client(host="127.0.0.1", port=first[1], api_path="/v3/", session=session)
        store.set("value", b"x" * 64)
        store.set("cas", b"same")
        ops = {
            "get": (lambda: store.get("value"), lambda: raw.get("/bench/value")),
            "compare_set": (
                lambda: store.compare_set("cas", b"same", b"same"),
                lambda: raw.replace("/bench/cas", "same", "same"),
            ),
            "add": (lambda: store.add("n", 1), lambda: raw_add(raw, b"/bench/m")),
        }
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for op, (ours, theirs) in ops.items():
                samples.setdefault(("rdzv", op), []).extend(time_op(ours, count))
                samples.setdefault(("raw", op), []).extend(time_op(theirs, count))
        store.close()
    finally:
        etcd.stop()
    rows = []
    for op in ops:
        ours_us, raw_us = median(samples[("rdzv", op)]), median(samples[("raw", op)])
        rows.append([op, f"{ours_us:.0f}", f"{raw_us:.0f}", f"{ours_us / raw_us:.2f}"])
    text = "### etcd store vs raw etcd3gw on the same 3-member etcd: median latency\n\n" + table(
        ["op", "EtcdStore µs", "raw etcd3gw µs", "ratio"], rows
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
