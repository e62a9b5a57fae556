"""The status page: its JSON API and rules over real handlers, and the page itself in a
real headless Chromium during a rendezvous of node processes (Debian's chromium and
chromium-driver, which `make test` installs)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rdzv_core import StoreBackend
from rdzv_core.dashboard import Dashboard
from rdzv_core.rendezvous import RendezvousHandler
from rdzv_core.testing import MemoryStore

from .test_handler import FAST
from .test_policy import clean_env, node_command

ARTIFACTS = Path(os.environ.get("RDZV_TEST_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def run() -> Iterator[MemoryStore]:
    base = MemoryStore(timeout=timedelta(seconds=10))
    nodes = []
    for i in range(2):
        client = base.client()
        nodes.append(RendezvousHandler("job", client, StoreBackend(client, "job"), 2, 2,
                                       "10.0.0.1", FAST, attributes={"rack": f"r{i}"}))  # fmt: skip
    threads = [threading.Thread(target=n.next_rendezvous) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    yield base
    for node in nodes:
        node.close()


def test_the_api_serves_every_run_the_store_lists(run: MemoryStore) -> None:
    page = Dashboard(run.client())
    try:
        code, headers, body = fetch(page.url + "api/runs")
        assert code == 200 and headers["Content-Type"] == "application/json"
        (status,) = json.loads(body)["runs"]
        assert status["run_id"] == "job" and status["state"] == "complete"
        assert sorted(m["rank"] for m in status["members"]) == [0, 1]
        code, _, body = fetch(page.url + "api/runs/job")
        assert code == 200 and json.loads(body)["world_size"] == 2
        code, _, body = fetch(page.url + "api/runs/nope")
        assert code == 404 and json.loads(body)["exists"] is False
        code, headers, body = fetch(page.url)
        assert code == 200 and b'<script src="app.js"' in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert fetch(page.url + "app.js")[0] == 200 and fetch(page.url + "app.css")[0] == 200
        for method in ("POST", "PUT", "DELETE"):
            assert fetch(page.url + "api/runs", method)[0] == 405
        assert fetch(page.url + "nothing")[0] == 404
        assert page.address[0] == "127.0.0.1"
    finally:
        page.close()


def test_with_a_token_every_request_must_carry_it(run: MemoryStore) -> None:
    page = Dashboard(run.client(), token="s3cret")
    try:
        assert fetch(page.url + "api/runs")[0] == 401
        assert fetch(page.url)[0] == 401
        assert fetch(page.url + "api/runs", headers={"Authorization": "Bearer nope"})[0] == 401
        assert fetch(page.url + "api/runs", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert fetch(page.url + "?token=s3cret")[0] == 200
        assert fetch(page.url + "api/runs?token=s3cret")[0] == 200
    finally:
        page.close()


class SlowStore(MemoryStore):
    """A store whose non-blocking reads take 10 ms each, as a busy server's would."""

    def compare_set(self, key: str, expected: Any, desired: Any) -> bytes:
        time.sleep(0.01)
        return super().compare_set(key, expected, desired)


def test_a_slow_read_is_reused_twenty_times_as_long_as_it_took(run: MemoryStore) -> None:
    slow = SlowStore(timeout=timedelta(seconds=10), _data=run._data)
    page = Dashboard(slow)
    try:
        start = time.monotonic()
        first = page.status("job")
        took = time.monotonic() - start
        assert took > 0.1, "the store was not slow"
        time.sleep(0.6)  # past half a second, within 20 times the read
        assert page.status("job") is first, "a slow snapshot was read again too soon"
        time.sleep(max(0.0, start + 21 * took + 0.2 - time.monotonic()))  # read + 20 times it
        assert page.status("job") is not first, "the snapshot outlived 20 times its read"
    finally:
        page.close()


def test_many_viewers_cost_the_store_one_read_each_half_second(run: MemoryStore) -> None:
    page = Dashboard(run.client())
    try:
        stamps = {json.loads(fetch(page.url + "api/runs/job")[2])["history"][0]["round"]
                  for _ in range(20)}  # fmt: skip
        assert stamps == {0}
        first = page.status("job")
        assert page.status("job") is first, "a snapshot is reused within half a second"
        time.sleep(0.6)
        assert page.status("job") is not first
    finally:
        page.close()


def rdzv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rdzv_core", *args], capture_output=True,
                          text=True, timeout=60, env=clean_env())  # fmt: skip


def test_dashboard_bad_input(tmp_path: Path) -> None:
    endpoint = str(tmp_path / "store")
    unknown = rdzv("dashboard", "--store-type", "file", "--endpoint", endpoint, "--run-id", "x")
    assert unknown.returncode == 1 and "No rendezvous state for run 'x'" in unknown.stderr
    assert unknown.stderr.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = rdzv("dashboard", "--store-type", "file", "--endpoint", endpoint, "--port",
                    str(port))  # fmt: skip
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert busy.stderr.count("\n") == 1
    bad = rdzv("dashboard", "--store-type", "file", "--endpoint", endpoint, "--port", "99999")
    assert bad.returncode == 2 and "--port must be 0 to 65535" in bad.stderr
    unreachable = rdzv("dashboard", "--endpoint", "127.0.0.1:9", "--config", "read_timeout=1")
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("rdzv: ")


# -- in a real browser -------------------------------------------------------------------------

EVIL = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=Service(driver))


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} (waited {timeout} s)"
        time.sleep(0.1)


def test_the_page_in_chromium_shows_ranks_escapes_nodes_and_marks_a_lost_one(
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    endpoint = str(tmp_path / "store")
    labels = ["first", "second", EVIL]
    nodes = [subprocess.Popen(node_command(endpoint, "browser", 3, 3, ""), stdout=subprocess.PIPE,
                              text=True, env=clean_env(RDZV_NODE_ATTRS=f"label={label}"))
             for label in labels]  # fmt: skip
    page = subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", "dashboard", "--store-type", "file", "--endpoint",
         endpoint, "--run-id", "browser", "--port", "0", "--wait"],
        stdout=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    browser = None
    try:
        assert page.stdout is not None
        url = page.stdout.readline().split(": ", 1)[1].strip()
        for node in nodes:
            assert node.stdout is not None
            node.stdout.readline()  # its round
        browser = chromium()
        browser.get(url)

        def members() -> list[dict[str, str]]:
            """The member rows as the page shows them now (read in one go: the page
            redraws every second)."""
            return list(browser.execute_script(
                "return [...document.querySelectorAll('tr.member')].map(r => ({"
                "node: r.dataset.node, rank: r.dataset.rank, cls: r.className,"
                "attrs: r.querySelector('td.attrs').textContent, text: r.textContent}))"
            ))  # fmt: skip

        rows = wait_for(lambda: len(members()) == 3 and members(), 20, "3 member rows")
        assert sorted(int(r["rank"]) for r in rows) == [0, 1, 2]
        assert {r["attrs"] for r in rows} == {f"label={label}" for label in labels}, rows
        assert browser.execute_script("return window.pwned === undefined")
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img")
        browser.execute_script("window.notReloaded = 42")
        victim = next(r["node"] for r in rows if "label=second" in r["attrs"])
        nodes[1].kill()
        killed = time.monotonic()

        def victim_marked() -> bool:
            row = [r for r in members() if r["node"] == victim]
            return bool(row) and any(c in row[0]["cls"] for c in ("stale", "lost"))

        # the liveness window (2 s) + a poll (1 s) + the page's own cache and redraw
        wait_for(victim_marked, 8, "the killed node was never marked on the page")
        took = time.monotonic() - killed
        assert browser.execute_script("return window.notReloaded") == 42, "the page reloaded"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
        assert took < 8
    finally:
        if browser is not None:
            browser.quit()
        for proc in [*nodes, page]:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
