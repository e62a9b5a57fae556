"""Throwaway TLS files for tests of store types that speak TLS (needs ``openssl``)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

__all__ = ["TLSFiles", "make_tls_files"]


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: a CA, a server certificate for 127.0.0.1, and a client certificate."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls_files(directory: str) -> TLSFiles:
    """Create a throwaway CA and certificates with the ``openssl`` command."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rdzv-test-ca",
        "-keyout",
        path("ca.key"),
        "-out",
        path("ca.pem"),
    )
    with open(path("san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=rdzv-{name}",
            "-keyout",
            path(f"{name}.key"),
            "-out",
            path(f"{name}.csr"),
        )
        run(
            "x509",
            "-req",
            "-in",
            path(f"{name}.csr"),
            "-CA",
            path("ca.pem"),
            "-CAkey",
            path("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            path("san.ext"),
            "-out",
            path(f"{name}.pem"),
        )
    return TLSFiles(
        path("ca.pem"),
        path("server.pem"),
        path("server.key"),
        path("client.pem"),
        path("client.key"),
    )
