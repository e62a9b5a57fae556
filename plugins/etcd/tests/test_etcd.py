"""etcd-specific behaviour against real etcd servers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from rdzv_plugin_etcd import EtcdStore
from rdzv_plugin_etcd.plugin import parse_etcd_endpoint
from rdzv_plugin_etcd.store import EtcdAuthenticationError
from rdzv_plugin_etcd.testing import Etcd, free_port, make_tls_files, start_etcd

from rdzv_core import (
    RendezvousConnectionError,
    RendezvousParameters,
    StoreConnectionError,
    StoreDataLostError,
    create_backend,
)

MESSAGE = "The connection to the C10d store has failed. See inner exception for details."


def params(endpoint: str, run_id: str = "run", **config: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", endpoint, run_id, 1, 1, store_type="etcd", **config)


def test_watch_wakes_a_blocked_get_promptly(etcd: Etcd, prefix: str) -> None:
    waiter = EtcdStore("127.0.0.1", etcd.port, prefix=prefix)
    writer = EtcdStore("127.0.0.1", etcd.port, prefix=prefix)
    woke: list[float] = []

    def wait() -> None:
        waiter.get("late")
        woke.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)  # the waiter is watching now
    written = time.monotonic()
    writer.set("late", "v")
    thread.join(10)
    # Under the 1 s fallback read: only the watch can have woken it this soon.
    assert woke and woke[0] - written < 0.8, "the watch did not wake the reader"


def test_many_concurrent_clients(etcd: Etcd, prefix: str) -> None:
    clients = [EtcdStore("127.0.0.1", etcd.port, prefix=prefix) for _ in range(32)]
    results: list[int] = []
    lock = threading.Lock()

    def work(store: EtcdStore) -> None:
        for _ in range(10):
            value = store.add("n", 1)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 321))


def test_etcd_killed_under_a_blocked_get_fails_within_the_read_timeout(
    own_etcd: Etcd, prefix: str
) -> None:
    """A dead etcd may be electing or restarting: the read retries it until its own
    deadline, then says etcd did not answer (never a plain timeout)."""
    store = EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix, timeout=timedelta(seconds=3))
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            store.get("never")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=blocked)
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)
    own_etcd.kill()
    thread.join(15)
    assert not thread.is_alive(), "the reader hung after etcd died"
    assert 2.9 <= time.monotonic() - started < 6
    assert isinstance(errors[0], StoreConnectionError), errors
    assert "did not answer" in str(errors[0])


def test_a_blocked_get_survives_a_restart_of_etcd(own_etcd: Etcd, prefix: str) -> None:
    store = EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix, timeout=timedelta(seconds=30))
    store.set("before", "1")
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(store.get("after")))
    thread.start()
    time.sleep(0.3)
    own_etcd.restart()
    own_etcd.wait_healthy()
    writer = EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix)
    writer.set("after", "2")
    thread.join(15)
    assert got == [b"2"]
    assert store.get("before") == b"1"


def test_a_wiped_etcd_is_data_loss_never_a_fresh_store(own_etcd: Etcd, prefix: str) -> None:
    store = EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix, timeout=timedelta(seconds=10))
    for _ in range(20):
        store.add("n", 1)
    own_etcd.restart(wipe=True)
    own_etcd.wait_healthy()
    started = time.monotonic()
    with pytest.raises(StoreDataLostError, match="lost the data this store held"):
        store.add("n", 1)
    assert time.monotonic() - started < 10
    with pytest.raises(StoreDataLostError):  # and it stays lost: no call starts afresh
        store.check(["n"])
    fresh = EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix)  # a new client starts anew
    assert fresh.check(["n"]) is False


def test_another_cluster_at_the_same_address_is_data_loss(own_etcd: Etcd, prefix: str) -> None:
    store = EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix, timeout=timedelta(seconds=10))
    store.set("k", "v")
    own_etcd.command += ["--initial-cluster-token", "another-cluster"]
    own_etcd.restart(wipe=True)
    own_etcd.wait_healthy()
    with pytest.raises(StoreDataLostError, match="a different etcd cluster answers now"):
        store.get("k")


def test_lease_keeps_keys_while_a_client_lives_and_expires_them_after(
    etcd: Etcd, prefix: str
) -> None:
    first = EtcdStore("127.0.0.1", etcd.port, prefix=prefix, ttl=1)
    second = EtcdStore("127.0.0.1", etcd.port, prefix=prefix, ttl=1)
    first.set("a", "1")
    second.set("b", "2")
    first.close()
    time.sleep(2.5)  # past the ttl: the second client's refreshes keep the shared lease
    observer = EtcdStore("127.0.0.1", etcd.port, prefix=prefix)
    assert observer.check(["a", "b"])
    second.close()
    deadline = time.monotonic() + 10
    while observer.check(["a"]) or observer.check(["b"]):
        assert time.monotonic() < deadline, "the keys outlived their last client's lease"
        time.sleep(0.2)


def test_runs_are_isolated_by_prefix(etcd: Etcd) -> None:
    _, one = create_backend(params(etcd.endpoint, "run-one"))
    _, two = create_backend(params(etcd.endpoint, "run-two"))
    one.set("k", "one")
    two.set("k", "two")
    assert (one.get("k"), two.get("k")) == (b"one", b"two")
    assert one.num_keys() == two.num_keys() == 2  # "k" and the backend's state key
    assert isinstance(one, EtcdStore) and one.prefix == "/rdzv/run-one/"
    _, custom = create_backend(params(etcd.endpoint, "run-one", prefix="/elsewhere/"))
    assert custom.check(["k"]) is False


def enable_auth(etcd: Etcd, password: str) -> None:
    base = f"http://127.0.0.1:{etcd.port}/v3"
    for path, body in [
        ("/auth/user/add", {"name": "root", "password": password}),
        ("/auth/user/grant", {"user": "root", "role": "root"}),
        ("/auth/enable", {}),
    ]:
        requests.post(base + path, json=body, timeout=5).raise_for_status()


def test_authentication(own_etcd: Etcd, prefix: str) -> None:
    enable_auth(own_etcd, "s3cret")
    store = EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix, user="root", password="s3cret")
    store.set("k", "v")
    assert store.get("k") == b"v"
    with pytest.raises(EtcdAuthenticationError, match="rejected the credentials"):
        EtcdStore(
            "127.0.0.1",
            own_etcd.port,
            prefix=prefix,
            user="root",
            password="wrong",
            timeout=timedelta(seconds=2),
        )
    with pytest.raises(EtcdAuthenticationError, match="requires authentication"):
        EtcdStore("127.0.0.1", own_etcd.port, prefix=prefix, timeout=timedelta(seconds=2))
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(own_etcd.endpoint, user="root", password="wrong", read_timeout="2"))
    assert isinstance(info.value.__cause__, EtcdAuthenticationError)
    _, ok = create_backend(params(own_etcd.endpoint, user="root", password="s3cret"))
    assert ok.num_keys() == 1


def test_unreachable_etcd_fails_within_the_read_timeout() -> None:
    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(f"127.0.0.1:{free_port()}", read_timeout="2"))
    assert str(info.value) == MESSAGE
    assert "Could not reach etcd" in str(info.value.__cause__)
    assert 1.9 <= time.monotonic() - start < 6


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("etcd0", ("http", "etcd0", 2379)),
        ("etcd0:2380", ("http", "etcd0", 2380)),
        ("https://etcd0:4001", ("https", "etcd0", 4001)),
        ("http://etcd0", ("http", "etcd0", 2379)),
        ("[::1]:2379", ("http", "::1", 2379)),
        ("http://etcd0:0", ("http", "etcd0", 0)),  # as given: never a different port
    ],
)
def test_endpoint_forms(endpoint: str, expected: tuple[str, str, int]) -> None:
    assert parse_etcd_endpoint(endpoint, None) == expected


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://etcd0:1",
        "http://etcd0:1/v3",
        "https://",
        "http://etcd0:99999",
        "http://etcd0:x",
        "http://[::1",
        "http://[zz]:1",
    ],
)
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(ValueError, match="etcd endpoint"):
        parse_etcd_endpoint(endpoint, None)


@pytest.mark.parametrize("endpoint", ["a..b", "http://a..b:1", "https://x.a..b"])
def test_malformed_host_names(endpoint: str) -> None:
    with pytest.raises(ValueError, match=f"hostname of the rendezvous endpoint '{endpoint}'"):
        create_backend(params(endpoint))


def test_bad_options(etcd: Etcd) -> None:
    with pytest.raises(ValueError, match="user' and 'password"):
        create_backend(params(etcd.endpoint, user="root"))
    with pytest.raises(ValueError, match="ttl"):
        create_backend(params(etcd.endpoint, ttl="0"))
    with pytest.raises(ValueError, match="ttl must be from 1 to 2147483647 seconds, got 10"):
        create_backend(params(etcd.endpoint, ttl=str(10**20)))
    for option, what in [("cacert", "CA certificate"), ("cert", "client certificate")]:
        with pytest.raises(ValueError) as info:
            create_backend(params(f"https://{etcd.endpoint}", **{option: "/no/such.pem"}))
        assert str(info.value) == (
            f"Cannot read the {what} file ({option}) '/no/such.pem': No such file or directory."
        )
    with pytest.raises(ValueError, match="contradicts"):
        create_backend(params(f"http://{etcd.endpoint}", protocol="https"))


def test_a_host_given_with_its_port_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError) as info:
        EtcdStore("127.0.0.1:2379")
    assert str(info.value) == (
        "The etcd host must be a name or an address without a port, got '127.0.0.1:2379': "
        "give the port apart (host='127.0.0.1', port=2379)."
    )
    with pytest.raises(ValueError, match="got 'etcd1:2380'"):
        EtcdStore("etcd0", members=[("etcd1:2380", 2379)])
    with pytest.raises(ValueError, match="port must be from 1 to 65535, got 0"):
        EtcdStore("etcd0", 0)
    with pytest.raises(StoreConnectionError, match=r"http://\[::1\]:1"):  # IPv6 is an address
        EtcdStore("::1", 1, timeout=timedelta(seconds=1))


def test_tls_with_client_certificates(tmp_path: Path, prefix: str) -> None:
    files = make_tls_files(str(tmp_path))
    server = start_etcd(tls=files)
    try:
        store = EtcdStore(
            "127.0.0.1",
            server.port,
            prefix=prefix,
            protocol="https",
            ca_cert=files.ca,
            cert=files.client_cert,
            key=files.client_key,
        )
        store.set("k", "over tls")
        assert store.get("k") == b"over tls"
        _, through_params = create_backend(
            params(
                f"https://{server.endpoint}",
                cacert=files.ca,
                cert=files.client_cert,
                key=files.client_key,
            )
        )
        assert through_params.num_keys() == 1
        with pytest.raises(StoreConnectionError):  # no client certificate: refused
            EtcdStore(
                "127.0.0.1",
                server.port,
                prefix=prefix,
                protocol="https",
                ca_cert=files.ca,
                timeout=timedelta(seconds=1),
            )
        with pytest.raises(StoreConnectionError):  # plain HTTP to a TLS port
            EtcdStore("127.0.0.1", server.port, prefix=prefix, timeout=timedelta(seconds=1))
    finally:
        server.stop()


def test_rdzv_commands_against_an_unreachable_etcd_fail_cleanly() -> None:
    import subprocess
    import sys

    port = free_port()
    target = ["--endpoint", f"127.0.0.1:{port}", "--run-id", "r", "--config", "read_timeout=2"]
    for command in (["state"], ["join", "--nnodes", "2"]):
        proc = subprocess.run(
            [sys.executable, "-m", "rdzv_core", *command, "--store-type", "etcd", *target],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        assert "rdzv: RendezvousConnectionError" in proc.stderr
        assert "caused by: StoreConnectionError: Could not reach etcd" in proc.stderr
        assert "Traceback" not in proc.stderr
