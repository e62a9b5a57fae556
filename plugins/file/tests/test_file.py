"""file-specific behaviour: real processes, kills, torn writes, compaction, bad files."""

from __future__ import annotations

import os
import random
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rdzv_plugin_file import FileStore
from rdzv_plugin_file.log import SET, encode

from rdzv_core import (
    RendezvousConnectionError,
    RendezvousError,
    RendezvousParameters,
    StoreError,
    create_backend,
)

MESSAGE = "The connection to the C10d store has failed. See inner exception for details."


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def params(endpoint: str, **config: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", endpoint, "run", 1, 1, store_type="file", **config)


def test_eight_processes_add_exactly(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    code = """
        import sys
        from rdzv_plugin_file import FileStore
        store = FileStore(sys.argv[1])
        seen = [store.add("n", 1) for _ in range(500)]
        print(",".join(map(str, seen)))
    """
    procs = [run_python(code, path) for _ in range(8)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results += [int(v) for v in out.strip().split(",")]
    assert sorted(results) == list(range(1, 4001))
    assert FileStore(path).get("n") == b"4000"


WRITER = """
    import os, sys
    from rdzv_plugin_file import FileStore
    store = FileStore(sys.argv[1])
    start = int(sys.argv[2])
    for i in range(start, start + 100000):
        value = (str(i) * (1 + i % 100)).encode()
        store.multi_set([f"k{i}", f"m{i}"], [value, value])
        store.add("count", 1)
        print(i, flush=True)
"""


def test_writer_killed_at_random_points_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    rng = random.Random(1234)
    acknowledged: list[int] = []
    next_index = 0
    for _ in range(50):
        proc = run_python(WRITER, path, str(next_index))
        assert proc.stdout is not None
        first = proc.stdout.readline()  # running: the store is open and writing
        assert first.strip(), proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        done = [int(line) for line in (first + rest).split()]
        acknowledged += done
        next_index = done[-1] + 1 if done else next_index
        store = FileStore(path)
        for i in done:
            value = (str(i) * (1 + i % 100)).encode()
            assert store.multi_get([f"k{i}", f"m{i}"]) == [value, value], f"lost write {i}"
        assert int(store.get("count")) >= len(acknowledged)
        store.close()
    store = FileStore(path)
    assert all(store.check([f"k{i}", f"m{i}"]) for i in acknowledged)
    store.close()


def test_torn_record_is_ignored_then_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = FileStore(path)
    store.set("kept", "yes")
    store.close()
    record = encode([(SET, b"torn", b"x" * 1000)])
    for cut in (3, 8, 500, len(record) - 1):
        with open(path, "ab") as f:
            f.write(record[:cut])
        reopened = FileStore(path)
        assert reopened.get("kept") == b"yes"
        assert reopened.check(["torn"]) is False
        reopened.set("after", str(cut))
        reopened.close()
        again = FileStore(path)
        assert again.get("after") == str(cut).encode() and again.num_keys() == 2
        again.close()


def test_record_failing_its_checksum_mid_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = FileStore(path)
    store.set("a", "1" * 100)
    store.set("b", "2")
    store.close()
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        FileStore(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"garbage that is not ours\n" * 10, "not an rdzv file store"),
        (b"\x00" * 4096, "not an rdzv file store"),
        (b"RDZV", "truncated"),
    ],
)
def test_foreign_or_truncated_file_is_a_clear_error(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "store"
    path.write_bytes(content)
    start = time.monotonic()
    with pytest.raises(StoreError, match=match):
        FileStore(path)
    assert path.read_bytes() == content, "the store changed a file it does not own"
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(str(path)))
    assert isinstance(info.value.__cause__, StoreError)
    assert time.monotonic() - start < 5


def test_compaction_under_concurrent_threads_and_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    code = """
        import sys
        from rdzv_plugin_file import FileStore
        store = FileStore(sys.argv[1], compact_threshold=64 * 1024)
        for i in range(300):
            store.set(f"pad-{sys.argv[2]}-{i % 5}", b"p" * 2048)
            store.add("n", 1)
    """
    first = FileStore(path, compact_threshold=64 * 1024)
    procs = [run_python(code, path, str(p)) for p in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def read_constantly() -> None:
        reader = FileStore(path, compact_threshold=64 * 1024)
        last = 0
        try:
            while not stop.is_set():
                value = int(reader.get("n")) if reader.check(["n"]) else 0
                assert value >= last, "a reader saw the counter go backwards"
                last = value
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=read_constantly) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(300):
        first.set(f"pad-main-{i % 5}", b"m" * 2048)
        first.add("n", 1)
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert first.get("n") == b"1200"
    assert first.num_keys() == 1 + 4 * 5
    # About 2.4 MB were appended; a file this small was compacted. (Inode numbers prove
    # nothing: after two compactions the filesystem may hand the first inode out again.)
    assert os.path.getsize(path) < 4 * 64 * 1024, "the file was never compacted"
    assert not [p for p in os.listdir(tmp_path) if ".compact-" in p]
    fresh = FileStore(path)
    assert fresh.get("n") == b"1200" and fresh.num_keys() == 21


def test_a_long_job_does_not_grow_the_file_without_bound(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    for i in range(20000):
        store.set("heartbeat", str(i) * 20)
    assert os.path.getsize(tmp_path / "store") < 2 * 1024 * 1024
    assert store.get("heartbeat") == b"19999" * 20


def test_write_failure_like_a_full_disk_keeps_earlier_data(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    code = """
        import resource, signal, sys
        from rdzv_core import StoreError
        from rdzv_plugin_file import FileStore
        store = FileStore(sys.argv[1])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        i = 0
        try:
            while True:
                store.set(f"k{i}", b"v" * 7000)
                print(i, flush=True)
                i += 1
        except StoreError as e:
            print("error", e, flush=True)
    """
    proc = run_python(code, path)
    out, err = proc.communicate(timeout=60)
    lines = out.split("\n")
    assert any(line.startswith("error") for line in lines), err
    done = [int(x) for x in lines if x.isdigit()]
    store = FileStore(path)
    assert store.num_keys() == len(done) > 5
    store.set("after", "ok")
    assert FileStore(path).get("after") == b"ok"


def test_delete_persists(tmp_path: Path) -> None:
    a = FileStore(tmp_path / "store")
    a.set("k", "v")
    assert a.delete_key("k") is True
    assert a.delete_key("k") is False
    a.close()
    assert FileStore(tmp_path / "store").check(["k"]) is False


def test_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "store"
    FileStore(path).set("k", "v")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    _, store = create_backend(params(""))
    assert isinstance(store, FileStore)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    os.unlink(store.path)


def test_waiting_does_not_burn_cpu(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", timeout=timedelta(seconds=1))
    before = resource.getrusage(resource.RUSAGE_SELF)
    with pytest.raises(StoreError):
        store.get("never")
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.2, f"a 1 s wait used {cpu:.2f} s of CPU"


# -- create_backend ------------------------------------------------------------------------


def test_empty_endpoint_gets_a_fresh_temporary_file() -> None:
    fds = len(os.listdir("/proc/self/fd"))
    _, store = create_backend(params(""))
    _, other = create_backend(params(""))
    try:
        assert isinstance(store, FileStore) and isinstance(other, FileStore)
        assert store.path != other.path
        assert os.path.dirname(store.path) == tempfile.gettempdir()
        assert store.timeout == timedelta(seconds=300)
        assert len(os.listdir("/proc/self/fd")) == fds + 2, "mkstemp's descriptor leaked"
    finally:
        for s in (store, other):
            s.close()
            os.unlink(s.path)  # type: ignore[attr-defined]


def test_temp_file_creation_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(RendezvousError) as info:
        create_backend(params(""))
    assert type(info.value) is RendezvousError
    assert str(info.value) == (
        "The file creation for C10d store has failed. See inner exception for details."
    )
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("where", ["missing-dir/store", "a-directory", "/proc/version"])
def test_path_that_cannot_be_opened(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-directory").mkdir()
    path = where if where.startswith("/") else str(tmp_path / where)
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(path))
    assert str(info.value) == MESSAGE
    assert info.value.__cause__ is not None


COMPACTING_WRITER = """
    import sys
    from rdzv_plugin_file import FileStore
    store = FileStore(sys.argv[1], compact_threshold=64 * 1024)
    i = 0
    while True:
        store.set(f"k{i % 8}", str(i) * 2000)  # overwrites: a compaction every few writes
        print(i, flush=True)
        i += 1
"""


def test_writers_killed_mid_compaction_leave_no_stale_files(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = random.Random(99)
    last = -1
    for _ in range(30):
        proc = run_python(COMPACTING_WRITER, str(path))
        assert proc.stdout is not None and proc.stdout.readline()
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        last = max([last, *(int(x) for x in out.split())])
    planted = tmp_path / ".store.compact-4242-1"
    planted.write_bytes(b"left by a crash")
    other = tmp_path / ".other.compact-4242-1"  # another store's: not ours to remove
    other.write_bytes(b"x")
    store = FileStore(path)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".store.compact-"))
    assert leftovers == [], f"stale compaction files survived an open: {leftovers}"
    assert other.exists()
    assert store.num_keys() == 8
    store.close()


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (the tests run as root)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_filesystem_loses_no_acknowledged_write(small_filesystem: Path) -> None:
    """Fill the filesystem while writing and compacting: every write that returned is
    there afterwards with its last acknowledged value, and no failed write is."""
    path = small_filesystem / "store"
    store = FileStore(path, compact_threshold=64 * 1024)
    filler = small_filesystem / "filler"
    rng = random.Random(7)
    acknowledged: dict[str, bytes] = {}
    failures = 0
    with open(filler, "wb", buffering=0) as f:
        for step in range(3000):
            if step % 300 == 0:  # space comes back, then runs out again as the filler grows
                os.ftruncate(f.fileno(), 0)
                f.seek(0)
            key = f"k{rng.randrange(12)}"
            value = os.urandom(rng.randrange(100, 40_000))
            try:
                store.set(key, value)
                acknowledged[key] = value
            except StoreError:
                failures += 1
            try:
                f.write(b"\0" * 8 * 1024)
            except OSError:
                pass
            if step % 25 == 0 and acknowledged:  # read back through another client
                reader = FileStore(path, timeout=timedelta(seconds=1))
                keys = sorted(acknowledged)
                assert reader.multi_get(keys) == [acknowledged[k] for k in keys], f"step {step}"
                reader.close()
    assert failures > 0, "the filesystem never filled up"
    reopened = FileStore(path)
    for key, value in acknowledged.items():
        assert reopened.get(key) == value, f"{key}: the last acknowledged value was lost"
    assert reopened.num_keys() == len(acknowledged)
    assert not [p for p in small_filesystem.iterdir() if ".compact-" in p.name]
    store.set("after", "ok")
    assert reopened.get("after") == b"ok"
    store.close()
    reopened.close()


def test_a_path_with_a_nul_character_is_a_clear_error() -> None:
    with pytest.raises(ValueError) as info:
        create_backend(params("/tmp/a\x00b"))
    assert str(info.value) == "The file store path '/tmp/a\\x00b' must not contain a NUL character."


def test_queues_persist_through_compaction_and_are_not_keys(tmp_path: Path) -> None:
    """Queue items are records like any write: they survive the store closing and a
    compaction, and never show as keys (their keys start with a byte UTF-8 never uses)."""
    path = tmp_path / "store"
    store = FileStore(path, compact_threshold=4096)
    for i in range(3):
        store.queue_push("jobs", f"job {i}")
    store.set("plain", "x")
    for _ in range(200):  # enough rewrites of one key to compact the file several times
        store.set("churn", os.urandom(64))
    assert store.queue_pop("jobs") == b"job 0"
    store.close()
    reopened = FileStore(path)
    assert reopened.num_keys() == 2 and sorted(reopened.list_keys()) == ["churn", "plain"]
    assert reopened.queue_len("jobs") == 2
    assert [reopened.queue_pop("jobs"), reopened.queue_pop("jobs")] == [b"job 1", b"job 2"]
    assert reopened.num_keys() == 2 and reopened.queue_len("jobs") == 0
    assert os.path.getsize(path) < 4096 * 4, "the file was never compacted"
    reopened.close()
