"""The status page: a read-only HTTP server showing the rendezvous runs of one store, live.

``GET /`` is the page (its script and style at ``/app.js`` and ``/app.css``); it asks
``GET /api/runs`` every second and redraws without a reload. ``GET /api/runs`` returns
``{"runs": [<status>, ...]}`` and ``GET /api/runs/<run id>`` one status (the
:class:`~rdzv_core.rendezvous.status.RunWatcher` snapshot, as JSON): the same data, for
scripts. Runs are the ones named when the server was made, plus, on a store that can list
its keys, every run found in it.

Safety: it binds 127.0.0.1 unless told otherwise; only GET and HEAD are served; with a
token, every request must carry it (``Authorization: Bearer <token>``, or ``?token=`` for
the page, which passes it on); the page builds its DOM from text nodes only (never HTML
made from data) under a Content-Security-Policy that forbids inline and foreign scripts,
so a node that names itself ``<script>`` shows as text. A snapshot is reused for half a
second, or 20 times as long as reading it took if that is longer: many viewers cost the
store what one does, and reading takes about 5 % of the store's time at most, however
large the run or busy the store.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .capability import Capability
from .errors import RendezvousError, StoreError
from .rendezvous.status import RunStatuses
from .store import Store

__all__ = ["Dashboard"]

_MAX_RUNS = 100
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/app.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/app.css": ("dashboard.css", "text/css; charset=utf-8"),
}


class Dashboard:
    """Serves the status of ``run_ids`` (and of every run the store lists, or that
    ``discover()`` names) from ``store`` on ``host``:``port`` (port 0 picks one) until
    :meth:`close`. ``token``: a secret every request must carry; None serves everyone who
    can reach the address."""

    def __init__(
        self,
        store: Store,
        run_ids: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        discover: Callable[[], list[str]] | None = None,
        statuses: RunStatuses | None = None,
    ) -> None:
        self._store = store
        self._named = list(run_ids or [])
        self._discover = discover
        self._token = token
        self._statuses = statuses if statuses is not None else RunStatuses(store)
        try:
            self._http = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as e:
            raise OSError(f"the status page cannot listen on {host}:{port}: {e.strerror}") from None
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="rdzv-dashboard", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)

    # -- data ------------------------------------------------------------------------------

    def run_ids(self) -> list[str]:
        """The runs shown: those named, then those the store lists (if it can)."""
        found = list(self._named)
        if self._discover is not None:
            found += [run_id for run_id in self._discover() if run_id not in found]
        elif Capability.LIST_KEYS in self._store.capabilities:
            for key in self._store.list_keys():
                if key.startswith("rdzv.") and key.endswith("/policy"):
                    run_id = key[len("rdzv.") : -len("/policy")]
                    if run_id not in found:
                        found.append(run_id)
        return found[:_MAX_RUNS]

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's status (see :class:`~rdzv_core.rendezvous.status.RunStatuses`)."""
        return self._statuses.get(run_id)

    def _authorised(self, header: str | None, query: dict[str, list[str]]) -> bool:
        if self._token is None:
            return True
        given = ""
        if header and header.startswith("Bearer "):
            given = header[len("Bearer ") :]
        elif query.get("token"):
            given = query["token"][0]
        return hmac.compare_digest(given.encode(), self._token.encode())

    # -- HTTP ------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "rdzv-dashboard"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no access log on stderr

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if not dashboard._authorised(self.headers.get("Authorization"), query):
                    self._send(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"})
                    return
                if url.path in _STATIC:
                    name, kind = _STATIC[url.path]
                    body = resources.files("rdzv_core").joinpath(f"web/{name}").read_bytes()
                    self._send_bytes(HTTPStatus.OK, body, kind)
                    return
                try:
                    if url.path == "/api/runs":
                        runs = [dashboard.status(r) for r in dashboard.run_ids()]
                        self._send(HTTPStatus.OK, {"runs": runs, "time": time.time()})
                    elif url.path.startswith("/api/runs/"):
                        run_id = unquote(url.path[len("/api/runs/") :])
                        run = dashboard.status(run_id)
                        code = HTTPStatus.OK if run["exists"] else HTTPStatus.NOT_FOUND
                        self._send(code, run)
                    else:
                        self._send(HTTPStatus.NOT_FOUND, {"error": "no such page"})
                except (RendezvousError, StoreError, OSError) as e:
                    self._send(HTTPStatus.BAD_GATEWAY, {"error": f"the store failed: {e}"})

            def _refuse(self) -> None:
                self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "read-only: GET only"})

            do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

            def _send(self, code: HTTPStatus, data: Any) -> None:
                body = json.dumps(data, sort_keys=True).encode()
                self._send_bytes(code, body, "application/json")

            def _send_bytes(self, code: HTTPStatus, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in _HEADERS.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler
