"""redis-specific behaviour against real redis-server processes."""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rdzv_plugin_redis import RedisStore
from redis_helpers import RedisServer, factory, free_port, open_store, start_redis

from rdzv_core import (
    Capability,
    RendezvousConnectionError,
    RendezvousParameters,
    StoreConnectionError,
    create_backend,
)

MESSAGE = "The connection to the C10d store has failed. See inner exception for details."


def params(endpoint: str, **config: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", endpoint, "run", 1, 1, store_type="redis", **config)


def _count(opener: object, index: int) -> tuple[list[int], int]:
    store = opener()  # type: ignore[operator]
    adds = [store.add("adds", 1) for _ in range(300)]
    wins = 0
    while wins < 100:  # each desired value is unique, so a returned match is a real win
        current = store.compare_set("cas", "", "0:-:-")
        desired = f"{int(current.split(b':')[0]) + 1}:{index}:{wins}".encode()
        if store.compare_set("cas", current, desired) == desired:
            wins += 1
    store.close()
    return adds, wins


def test_six_processes_add_and_compare_set_exactly(redis_server: RedisServer) -> None:
    opener = factory(redis_server)
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        results = pool.starmap(_count, [(opener, i) for i in range(6)])
    adds = sorted(v for r in results for v in r[0])
    assert adds == list(range(1, 1801)), "an add was lost or doubled across processes"
    store = opener()
    count = int(store.get("cas").split(b":")[0])
    assert count == 600, "a compare_set increment was lost across processes"


def _set_later(opener: object, delay: float) -> float:
    store = opener()  # type: ignore[operator]
    time.sleep(delay)
    stamp = time.time()
    store.set("late", "here")
    return stamp


def test_a_get_blocked_in_one_process_wakes_on_a_set_from_another(
    redis_server: RedisServer,
) -> None:
    opener = factory(redis_server)
    store = opener()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(_set_later, (opener, 1.0))
        assert store.get("late") == b"here"
        woke = time.time()
        written = pending.get(30)
    assert woke - written < 0.5, f"woke {woke - written:.3f} s after the write (no polling)"


def test_multi_set_is_atomic_for_readers(redis_server: RedisServer) -> None:
    opener = factory(redis_server)
    writer, reader = opener(), opener()
    writer.multi_set(["a", "b"], ["0", "0"])
    stop = threading.Event()
    torn: list[list[bytes]] = []

    def read() -> None:
        while not stop.is_set():
            pair = reader.multi_get(["a", "b"])
            if pair[0] != pair[1]:
                torn.append(pair)

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(500):
        writer.multi_set(["a", "b"], [str(i), str(i)])
    stop.set()
    thread.join()
    assert not torn, f"a reader saw half a multi_set: {torn[:3]}"


def test_prefixes_isolate_jobs_sharing_one_redis(redis_server: RedisServer) -> None:
    one = open_store(redis_server.port, "job-1/")
    two = open_store(redis_server.port, "job-2/")
    one.set("k", "1")
    assert not two.check(["k"]) and two.num_keys() == 0
    two.set("k", "2")
    assert one.get("k") == b"1" and one.num_keys() == 1


def test_endpoint_forms_and_config(redis_server: RedisServer, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/3"
    _, store = create_backend(params(url, prefix="p/"))
    store.set("k", "v")
    _, same = create_backend(params(redis_server.endpoint, db="3", prefix="p/"))
    assert same.get("k") == b"v", "db 3 through the URL and through config must be one place"
    _, other_db = create_backend(params(redis_server.endpoint, prefix="p/"))
    assert not other_db.check(["k"])
    assert Capability.PERSISTENT not in store.capabilities
    _, durable = create_backend(params(redis_server.endpoint, persistent="true"))
    assert Capability.PERSISTENT in durable.capabilities
    with pytest.raises(ValueError, match="redis://, rediss:// or unix://"):
        create_backend(params("http://127.0.0.1:1"))
    for endpoint in ("a..b:1", "redis://a..b:1", "rediss://a..b:1"):
        with pytest.raises(ValueError, match=f"hostname of the rendezvous endpoint '{endpoint}'"):
            create_backend(params(endpoint))
    with pytest.raises(ValueError) as info:
        create_backend(params(redis_server.endpoint, tls_ca=str(tmp_path / "no-ca.pem")))
    assert str(info.value) == (
        f"Cannot read the CA certificate file (tls_ca) '{tmp_path / 'no-ca.pem'}': No such file "
        "or directory."
    )
    for endpoint in ("unix://", "unix://host"):
        with pytest.raises(ValueError, match=f"^The Redis endpoint '{endpoint}' must name the"):
            create_backend(params(endpoint))
    for endpoint in ("redis://h:99999", "redis://h:x", "rediss://[::1", "redis://[zz]:1"):
        with pytest.raises(ValueError, match=f"^The Redis endpoint '{re.escape(endpoint)}' is not"):
            create_backend(params(endpoint))
    for s in (store, same, other_db, durable):
        s.close()


def test_unix_socket_endpoint(tmp_path: Path) -> None:
    import subprocess

    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _, store = create_backend(params(f"unix://{sock}"))
        store.set("k", "v")
        assert store.get("k") == b"v"
        store.close()
    finally:
        proc.kill()
        proc.wait()


# -- authentication and TLS ----------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_redis() -> RedisServer:
    server = start_redis(password="s3cret")
    yield server  # type: ignore[misc]
    server.stop()


def test_acl_user_with_password_from_a_file_or_the_environment(
    acl_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    _, store = create_backend(
        params(acl_redis.endpoint, username="rdzv", password_file=str(secret))
    )
    store.set("k", "v")
    monkeypatch.setenv("RDZV_REDIS_PASSWORD", "s3cret")
    _, from_env = create_backend(params(acl_redis.endpoint, username="rdzv"))
    assert from_env.get("k") == b"v"
    store.close()
    from_env.close()


@pytest.mark.parametrize("password", ["wrong", None])
def test_a_wrong_or_missing_password_fails_fast(
    acl_redis: RedisServer, password: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if password:
        monkeypatch.setenv("RDZV_REDIS_PASSWORD", password)
    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(acl_redis.endpoint, username="rdzv", read_timeout="30"))
    assert str(info.value) == MESSAGE
    assert isinstance(info.value.__cause__, StoreConnectionError)
    assert time.monotonic() - start < 5


@pytest.fixture(scope="module")
def tls_redis() -> RedisServer:
    server = start_redis(tls=True)
    yield server  # type: ignore[misc]
    server.stop()


def test_tls_with_the_servers_ca(tls_redis: RedisServer) -> None:
    assert tls_redis.tls is not None
    _, store = create_backend(params(tls_redis.endpoint, tls_ca=tls_redis.tls.ca))
    store.set("k", "v")
    _, with_client_cert = create_backend(
        params(
            f"rediss://127.0.0.1:{tls_redis.port}",
            tls_ca=tls_redis.tls.ca,
            tls_cert=tls_redis.tls.client_cert,
            tls_key=tls_redis.tls.client_key,
        )
    )
    assert with_client_cert.get("k") == b"v"
    store.close()
    with_client_cert.close()


def test_failed_tls_is_a_connection_error_fast(tls_redis: RedisServer, tmp_path: Path) -> None:
    from rdzv_core.testing.tls import make_tls_files

    stranger = make_tls_files(str(tmp_path))  # a CA that did not sign the server
    # The wrong CA fails in the handshake, at once; plain text to a TLS port gets no answer
    # at all, like a frozen server: retried until the read timeout (3 s), plus the last
    # command's own timeout (at most 5 s).
    for config, bound in (({"tls_ca": stranger.ca}, 5), ({"read_timeout": "3"}, 3 + 5 + 2)):
        start = time.monotonic()
        with pytest.raises(RendezvousConnectionError) as info:
            create_backend(params(tls_redis.endpoint, **{"read_timeout": "30", **config}))
        assert isinstance(info.value.__cause__, StoreConnectionError)
        assert time.monotonic() - start < bound


# -- failures ----------------------------------------------------------------------------


def test_unreachable_redis_fails_within_the_read_timeout() -> None:
    """Nobody listening may be a server restarting or a failover: retried, then refused."""
    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(f"127.0.0.1:{free_port()}", read_timeout="3"))
    assert isinstance(info.value.__cause__, StoreConnectionError)
    assert "could not reach Redis" in str(info.value.__cause__)
    assert 2.9 <= time.monotonic() - start < 6


def test_redis_killed_under_a_blocked_get_fails_within_the_read_timeout(
    own_redis: RedisServer,
) -> None:
    store = RedisStore(
        host="127.0.0.1", port=own_redis.port, prefix="k/", timeout=timedelta(seconds=5)
    )
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            store.get("never")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=blocked)
    started = time.monotonic()
    thread.start()
    time.sleep(0.5)
    own_redis.proc.kill()
    thread.join(15)
    assert not thread.is_alive(), "the blocked get hung after Redis died"
    assert time.monotonic() - started < 5 + 3
    assert isinstance(errors[0], StoreConnectionError), errors


def test_a_frozen_redis_is_noticed_within_the_read_timeout(own_redis: RedisServer) -> None:
    """A server that stops answering: each command gives up after 5 s and is retried
    until the read timeout; the last attempt may add its own 5 s."""
    import os
    import signal

    store = RedisStore(
        host="127.0.0.1", port=own_redis.port, prefix="f/", timeout=timedelta(seconds=8)
    )
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            store.get("never")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.5)
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    start = time.monotonic()
    try:
        thread.join(30)
        assert not thread.is_alive(), "a get on a frozen Redis hung"
        assert time.monotonic() - start < 8 + 5 + 2
        assert isinstance(errors[0], StoreConnectionError), errors
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)


def test_redis_py_never_resends_a_command_itself(redis_server: RedisServer) -> None:
    """The store retries through failures exactly once; redis-py resending a script after
    a timeout could apply an add twice."""
    store = open_store(redis_server.port, "r/")
    retry = store._client.get_connection_kwargs()["retry"]
    assert retry.get_retries() == 0


def test_an_add_on_a_dead_redis_fails_within_the_read_timeout(own_redis: RedisServer) -> None:
    store = RedisStore(
        host="127.0.0.1", port=own_redis.port, prefix="d/", timeout=timedelta(seconds=3)
    )
    store.add("n", 1)
    own_redis.kill()
    started = time.monotonic()
    with pytest.raises(StoreConnectionError, match="could not reach Redis"):
        store.add("n", 1)
    assert time.monotonic() - started < 3 + 2, "the failure was retried twice over"
