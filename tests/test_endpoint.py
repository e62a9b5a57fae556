"""Endpoint parsing, the local-host heuristic and read-timeout parsing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rdzv_core import RendezvousParameters, is_local_host, parse_endpoint, parse_read_timeout
from rdzv_core.storekit import readable_file, resolver_host, split_url


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (None, ("localhost", 29400)),
        ("", ("localhost", 29400)),
        ("  ", ("localhost", 29400)),
        ("host", ("host", 29400)),
        ("host:1234", ("host", 1234)),
        (" host:1 ", ("host", 1)),
        ("[::1]", ("::1", 29400)),
        ("[::1]:29401", ("::1", 29401)),
        ("1.2.3.4:5", ("1.2.3.4", 5)),
        ("ho_st:1", ("ho_st", 1)),
        ("hé:1", ("hé", 1)),
        ("node.example.:1", ("node.example.", 1)),
        (f"{'x' * 63}.example:1", (f"{'x' * 63}.example", 1)),
        ("host:0", ("host", 0)),
        ("host:00080", ("host", 80)),
        # Better than torch, which mis-splits a bare IPv6 address into (":", 1).
        ("::1", ("::1", 29400)),
        ("fe80::1", ("fe80::1", 29400)),
    ],
)
def test_parse_endpoint(endpoint: str | None, expected: tuple[str, int]) -> None:
    assert parse_endpoint(endpoint, 29400) == expected


@pytest.mark.parametrize(
    "endpoint",
    ["host:", "host:abc", "host:65536", "host:-1", "host:+1", "host: 12", "a:b:c", "[::1]:"],
)
def test_bad_port(endpoint: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_endpoint(endpoint, 29400)
    assert str(info.value) == (
        f"The port number of the rendezvous endpoint '{endpoint}' must be an integer between 0 "
        "and 65536."
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        ":1234",
        "[]",
        "[",
        "[]:5",
        "host name:1",
        "[fe80::1%eth0]:5",
        "http://h:1",
        "a..b:1",
        ".a:1",
        "a.b..:1",
        f"{'x' * 64}.example:1",
        "bü..x:1",
        "[a:b]:1",
        "[zz]:1",
        "[10.0.0.1]:1",
    ],
)
def test_bad_host(endpoint: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_endpoint(endpoint, 29400)
    assert str(info.value) == (
        f"The hostname of the rendezvous endpoint '{endpoint}' must be a dot-separated list of "
        "labels, an IPv4 address, or an IPv6 address."
    )


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.1.2.3", "::1", socket.gethostname()]
)
def test_local_hosts(host: str) -> None:
    assert is_local_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "8.8.8.8", "no-such-host.invalid"])
def test_remote_hosts(host: str) -> None:
    assert not is_local_host(host)


def test_resolver_host_passes_ascii_names_as_they_are_and_others_in_idna_form() -> None:
    assert resolver_host("node-7.cluster") == b"node-7.cluster"
    assert resolver_host("a..b") == b"a..b"
    with pytest.raises(socket.gaierror):  # not a bare UnicodeError
        socket.getaddrinfo(resolver_host("a..b"), None)
    assert resolver_host("::1") == b"::1"
    assert resolver_host("bücher.example") == b"xn--bcher-kva.example"


def test_resolver_host_names_a_non_ascii_host_without_an_idna_form() -> None:
    with pytest.raises(ValueError, match="The host name 'bü..x' is not valid .*1 to 63"):
        resolver_host("bü..x")


def test_split_url_checks_the_host_and_port_and_names_the_endpoint() -> None:
    url = split_url("rediss://user@[::1]:6380/2", "Redis")
    assert (url.scheme, url.hostname, url.port, url.path) == ("rediss", "::1", 6380, "/2")
    assert split_url("unix:///run/redis.sock", "Redis").path == "/run/redis.sock"
    for endpoint, reason in [
        ("redis://h:99999", "Port out of range 0-65535"),
        ("redis://h:abc", "Port could not be cast to integer value as 'abc'"),
        ("redis://[::1", "Invalid IPv6 URL"),
    ]:
        with pytest.raises(ValueError) as info:
            split_url(endpoint, "Redis")
        assert str(info.value) == f"The Redis endpoint '{endpoint}' is not a valid URL: {reason}."
    with pytest.raises(ValueError, match="hostname of the rendezvous endpoint 'http://a..b:1'"):
        split_url("http://a..b:1", "etcd")


def test_readable_file_opens_the_file_an_option_names(tmp_path: Path) -> None:
    def p(**config: str) -> RendezvousParameters:
        return RendezvousParameters("c10d", "", "r", 1, 1, **config)

    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    assert readable_file(p(ca=str(pem)), "ca", "CA file") == str(pem)
    assert readable_file(p(), "ca", "CA file") is None
    for path, reason in [
        (tmp_path / "no.pem", "No such file or directory"),
        (tmp_path, "Is a directory"),
    ]:
        with pytest.raises(ValueError) as info:
            readable_file(p(ca=str(path)), "ca", "CA file")
        assert str(info.value) == f"Cannot read the CA file (ca) '{path}': {reason}."


def test_read_timeout() -> None:
    def p(**c: object) -> RendezvousParameters:
        return RendezvousParameters("c10d", "", "r", 1, 1, **c)

    assert parse_read_timeout(p(), 60) == 60
    assert parse_read_timeout(p(read_timeout="5"), 60) == 5
    for bad in ("0", "-3", 0):
        with pytest.raises(ValueError, match="^The read timeout must be a positive integer.$"):
            parse_read_timeout(p(read_timeout=bad), 60)
    assert parse_read_timeout(p(read_timeout="2147483647"), 60) == 2**31 - 1
    with pytest.raises(
        ValueError, match="^The read timeout must be at most 2147483647 seconds, got 2147483648.$"
    ):
        parse_read_timeout(p(read_timeout="2147483648"), 60)
