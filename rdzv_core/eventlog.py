"""The event log: one JSON line per rendezvous event, appended to a file, so a job's
rendezvous history can be read after the fact.

Turned on per process by ``RDZV_EVENT_LOG=<path>`` or per handler by the config key
``event_log=<path>``. Each line is written with a single ``write`` on a file opened for
appending, so the nodes of one host (several processes) may share one file: lines never
interleave. A line::

    {"time": 1796193846.79, "kind": "completed", "run_id": "job-42", "store_type": null,
     "pid": 4242, "details": {"round": 0, "rank": 3, "world_size": 8, "seconds": 1.52, ...},
     "error": null}

``error`` is the error's description (type, message, causes) for ``failure`` events.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from .errors import describe_error
from .events import RendezvousEvent
from .hookspecs import hookimpl

__all__ = ["ENV", "EventLog", "event_record", "log_events_to"]

#: The environment variable naming the event log file of every handler in the process.
ENV = "RDZV_EVENT_LOG"
_installed: dict[str, EventLog] = {}
_lock = threading.Lock()


def event_record(event: RendezvousEvent) -> dict[str, Any]:
    """``event`` as the JSON-ready mapping the log writes."""
    return {
        "time": event.time,
        "kind": str(event.kind),
        "run_id": event.run_id,
        "store_type": event.store_type,
        "pid": os.getpid(),
        "details": dict(event.details),
        "error": describe_error(event.error) if event.error is not None else None,
    }


class EventLog:
    """A plugin that appends every event (of every run) to ``path`` as a JSON line."""

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(
                f"event_log: cannot open {path!r} for appending ({e.strerror}); give the path "
                "of a file in a directory that exists and is writable."
            ) from e
        self.path = path

    @hookimpl
    def rdzv_event(self, event: RendezvousEvent) -> None:
        line = json.dumps(event_record(event), default=str) + "\n"
        os.write(self._fd, line.encode())

    def stop(self) -> None:
        """Stop logging and close the file."""
        from .registry import unregister

        with _lock:
            unregister(self)
            _installed.pop(os.path.abspath(self.path), None)
            os.close(self._fd)


def log_events_to(path: str) -> EventLog:
    """Log every event of this process to ``path`` (once per path: later calls return
    the same log). A path that cannot be opened is a ValueError naming it."""
    from .registry import register

    key = os.path.abspath(path)
    with _lock:
        log = _installed.get(key)
        if log is None:
            log = EventLog(path)
            register(log, name=f"rdzv-event-log:{key}")
            _installed[key] = log
        return log
