"""Endpoint parsing, host names for the resolver, the "is this host me?" heuristic and
read-timeout parsing."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from .params import MAX_SECONDS, RendezvousParameters

__all__ = [
    "check_host",
    "is_local_host",
    "is_valid_host",
    "parse_endpoint",
    "parse_read_timeout",
    "resolver_host",
    "split_url",
]

_HOST = re.compile(r"[\w.:-]+")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_endpoint(endpoint: str | None, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]`` into (host, port), as torch's launcher parses endpoints.

    Blank → ``("localhost", default_port)``. IPv6 hosts go in brackets (``[::1]:29400``);
    unlike torch, a bare IPv6 address (``::1``) is taken as a host, not mis-split.
    Raises ValueError naming the endpoint for a bad port (1-5 digits, below 65536) or host.
    """
    text = (endpoint or "").strip()
    if not text:
        return "localhost", default_port
    if (text.startswith("[") and text.endswith("]")) or (text.count(":") > 1 and _is_ipv6(text)):
        host, port_text = text, None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, None
    if port_text is None:
        port = default_port
    elif _PORT.fullmatch(port_text) and int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(
            f"The port number of the rendezvous endpoint '{text}' must be an integer between 0 "
            "and 65536."
        )
    bracketed = len(host) >= 2 and host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not is_valid_host(host) or (bracketed and not _is_ipv6(host)):  # [...] is for IPv6
        raise _bad_host(text)
    return host, port


def check_host(host: str, endpoint: str) -> None:
    """Raise the ValueError naming ``endpoint`` unless :func:`is_valid_host` accepts
    ``host``: what a store plugin checks in the host of a URL endpoint."""
    if not is_valid_host(host):
        raise _bad_host(endpoint)


def _bad_host(endpoint: str) -> ValueError:
    return ValueError(
        f"The hostname of the rendezvous endpoint '{endpoint}' must be a dot-separated list of "
        "labels, an IPv4 address, or an IPv6 address."
    )


def is_valid_host(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address or a name whose dot-separated labels (in
    IDNA form; one trailing dot allowed) have 1 to 63 characters each."""
    return bool(_HOST.fullmatch(host)) and (_is_ipv6(host) if ":" in host else _valid_labels(host))


def split_url(endpoint: str, store: str) -> SplitResult:
    """``endpoint`` split as a URL whose host, if any, passes :func:`check_host` and whose
    port, if any, is a number from 0 to 65535. Otherwise a ValueError naming ``endpoint``
    ("The <store> endpoint '...' is not a valid URL: ..."). The scheme is the caller's to
    check."""
    try:
        url = urlsplit(endpoint)
        _ = url.port  # urllib checks the port only when it is asked for it
    except ValueError as e:
        raise ValueError(f"The {store} endpoint {endpoint!r} is not a valid URL: {e}.") from None
    if url.hostname:
        check_host(url.hostname, endpoint)
    return url


def _valid_labels(name: str) -> bool:
    """Whether each dot-separated label of ``name`` (in its IDNA form; one trailing dot
    allowed) has 1 to 63 characters, as a resolvable name's must."""
    try:
        encoded = resolver_host(name)
    except ValueError:
        return False
    labels = encoded[:-1] if encoded.endswith(b".") else encoded
    return all(0 < len(label) <= 63 for label in labels.split(b"."))


def _is_ipv6(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def resolver_host(host: str) -> bytes:
    """``host`` as the system resolver takes it (``socket.getaddrinfo``, ``connect``,
    ``bind``): an ASCII name as it is, any other in its IDNA form.

    Handing Python the name as bytes spares every process that connects the load of the
    IDNA codec (about a millisecond and 0.6 MiB), and a malformed ASCII name such as
    ``a..b`` gets the resolver's "Name or service not known" instead of a bare
    UnicodeError. Raises ValueError naming ``host`` when a non-ASCII name has no IDNA form.
    """
    if host.isascii():
        return host.encode("ascii")
    try:
        return host.encode("idna")
    except UnicodeError as e:
        raise ValueError(
            f"The host name {host!r} is not valid ({e}): a host name is dot-separated labels "
            "of 1 to 63 characters."
        ) from None


def _addresses(host: str) -> set[str]:
    import socket

    try:
        infos = socket.getaddrinfo(resolver_host(host), None, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        return set()
    return {str(info[4][0]) for info in infos}


def is_local_host(host: str) -> bool:
    """Whether ``host`` names this machine: localhost, a loopback address, this hostname,
    its canonical name, or any address this machine's hostname resolves to.

    A heuristic like torch's: it depends on DNS and /etc/hosts, and misses secondary NICs
    that the hostname does not resolve to. Pass ``is_host`` explicitly where that matters.
    """
    import ipaddress
    import socket

    if host == "localhost":
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    hostname = socket.gethostname()
    if host == hostname:
        return True
    try:
        infos = socket.getaddrinfo(
            resolver_host(hostname), None, proto=socket.IPPROTO_TCP, flags=socket.AI_CANONNAME
        )
    except (OSError, ValueError):
        return False
    host_addresses: set[str] | None = None
    for _family, _type, _proto, canonical, sockaddr in infos:
        address = str(sockaddr[0])
        if canonical == host or address == host:
            return True
        if host_addresses is None:
            host_addresses = _addresses(host)
        if address in host_addresses:
            return True
    return False


def parse_read_timeout(params: RendezvousParameters, default: int) -> int:
    """The ``read_timeout`` option in whole seconds (``default`` when absent); must be > 0
    and at most :data:`~rdzv_core.params.MAX_SECONDS`."""
    timeout = params.get_as_int("read_timeout", default)
    if timeout is None or timeout <= 0:
        raise ValueError("The read timeout must be a positive integer.")
    if timeout > MAX_SECONDS:
        raise ValueError(f"The read timeout must be at most {MAX_SECONDS} seconds, got {timeout}.")
    return timeout
