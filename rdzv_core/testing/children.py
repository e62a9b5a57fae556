"""Servers run as child processes by tests and benchmarks: each logs to a file of its own,
whose end explains a failed start."""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["delete_data", "log_tail", "port_was_taken", "spawn_logged"]


def spawn_logged(command: list[str], log: str) -> subprocess.Popen[bytes]:
    """Start ``command``; its standard output and error are appended to the file ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def log_tail(log: str, size: int = 2000) -> str:
    """The last ``size`` bytes of the file ``log`` as text ("" if there is none)."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


def port_was_taken(proc: subprocess.Popen[bytes], log: str) -> bool:
    """Whether the child has exited because another process held a port it was to listen
    on (it logged "address already in use"): worth starting again on fresh ports."""
    return proc.poll() is not None and "address already in use" in log_tail(log).lower()


def delete_data(data: str) -> None:
    """Delete a child's data directory ``data`` and its log ``<data>.log``, if there."""
    shutil.rmtree(data, ignore_errors=True)
    try:
        os.remove(data + ".log")
    except FileNotFoundError:
        pass
