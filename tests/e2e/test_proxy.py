"""The board through nginx, in real Chromium: Debian's nginx on loopback, with the very
proxy configuration compose.yaml ships (`deploy/nginx.conf`), in front of two real
instances on one PostgreSQL database. A rolling restart (SIGTERM one instance, start
it again, then the other) costs the page a reconnect and nothing else."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.e2e.conftest import Watch, open_board, visiting
from tests.e2e.test_board import add_task, api_tasks
from tests.integration.conftest import Server, ServerFactory, Store, free_port
from tests.pgcluster import PostgresCluster

pytestmark = pytest.mark.slow

SITE = Path(__file__).parents[2] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

STATES = """
(() => {
  window.__states = [];
  new MutationObserver(() => {
    const status = document.getElementById("status");
    if (status && window.__states.at(-1) !== status.dataset.state) {
      window.__states.push(status.dataset.state);
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
})();
"""
"""Notes every state the page's connection status goes through."""


@dataclass
class Proxy:
    """nginx on a free loopback port, proxying to two instances."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def site_for(first: Server, second: Server, port: int) -> str:
    """`deploy/nginx.conf` with the compose services' addresses replaced by these ones."""
    site = SITE.read_text()
    for service, server in (("tracker-1", first), ("tracker-2", second)):
        site, count = re.subn(rf"\b{service}:6969\b", f"127.0.0.1:{server.port}", site)
        assert count == 1, f"{service}:6969 is not in {SITE}"
    site, count = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", site)
    assert count == 1, f"{SITE} does not listen on 80"
    return site


def start_proxy(directory: Path, first: Server, second: Server) -> Proxy:
    if not Path(NGINX).exists():
        pytest.skip("needs nginx (apt-get install nginx-light)")
    directory.mkdir()
    port = free_port()
    (directory / "site.conf").write_text(site_for(first, second, port))
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (directory / "nginx.conf").write_text(
        f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {directory}/site.conf;
}}
"""
    )
    log = directory / "error.log"
    process = subprocess.Popen(
        [NGINX, "-p", str(directory), "-e", str(log), "-c", str(directory / "nginx.conf"),
         "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Proxy(url, process, log)
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "nginx did not come up"
        time.sleep(0.05)


def instance_store(factory: ServerFactory, name: str) -> Store:
    """The factory's database, with a directory of this instance's own (for its output)."""
    directory = factory.directory / name
    directory.mkdir()
    return Store(directory / "tracker.db", factory.store.url)


@dataclass
class Deployment:
    proxy: Proxy
    instances: tuple[Server, Server]


@pytest.fixture
def deployment(postgres_cluster: PostgresCluster, tmp_path: Path) -> Iterator[Deployment]:
    factory = ServerFactory(tmp_path, postgres_cluster.create_database)
    first, second = (
        factory(instance_store(factory, name), TRACKER_TRUST_PROXY="1", TRACKER_BCRYPT_ROUNDS="4")
        for name in "ab"
    )
    proxy = start_proxy(tmp_path / "nginx", first, second)
    yield Deployment(proxy, (first, second))
    proxy.stop()
    factory.close()


@pytest.fixture
def visitor(browser: Browser, deployment: Deployment) -> Iterator[BrowserContext]:
    """A new visitor of the proxy's address, watched like every browser test."""
    watch = Watch(deployment.proxy.url)
    # A reconnect is expected here; the page says so in its status, not as an error.
    watch.allow(r"WebSocket connection to .* failed")
    with visiting(browser, deployment.proxy.url, watch, STATES) as context:
        yield context


@dataclass
class Writer:
    """An API client creating tasks through the proxy until stopped, noting each answer."""

    url: str
    token: str
    acknowledged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            number = 0
            while not self.stop.is_set():
                number += 1
                try:
                    response = client.post("/api/tasks", json={"title": f"write {number}"})
                except httpx.TransportError as exc:
                    self.refused.append(f"{number}: {exc!r}")
                    continue
                if response.status_code == 201:
                    self.acknowledged.append(response.json()["id"])
                else:
                    self.refused.append(f"{number}: {response.status_code} {response.text}")
                time.sleep(0.01)


def test_the_board_works_through_the_proxy_websocket_included(
    visitor: BrowserContext, deployment: Deployment
) -> None:
    page = visitor.new_page()
    open_board(page)
    other_tab = visitor.new_page()
    open_board(other_tab)

    card = add_task(page, "Through nginx")
    expect(other_tab.locator("li.task .title", has_text="Through nginx")).to_be_visible()
    card.get_by_label("Custom duration").fill("2s")
    card.get_by_label("Custom duration").press("Enter")
    expect(other_tab.locator(".alert, [role=alert]").first).to_contain_text(
        "Through nginx", timeout=6_000
    )
    assert [task["title"] for task in api_tasks(visitor)] == ["Through nginx"]


def test_a_rolling_restart_costs_the_page_a_reconnect_and_loses_no_write(
    visitor: BrowserContext, deployment: Deployment
) -> None:
    page = visitor.new_page()
    open_board(page)
    guest = httpx.post(f"{deployment.proxy.url}/api/auth/guest").json()
    writer = Writer(deployment.proxy.url, guest["access_token"])
    writing = threading.Thread(target=writer.run)
    writing.start()
    try:
        for number, instance in enumerate(deployment.instances):
            time.sleep(0.5)  # some writes on both instances first
            assert instance.stop() == 0  # SIGTERM: drains, closes sockets with 1001
            add_task(page, f"while instance {number + 1} is down")
            expect(page.locator("#status")).to_have_attribute("data-state", "live")
            instance.start(same_port=True)
            # nginx takes a failed instance back after `fail_timeout` (1 s): a rolling
            # restart waits that long before it stops the next one.
            time.sleep(1.5)
    finally:
        writer.stop.set()
        writing.join(15)

    states: list[str] = page.evaluate("window.__states")
    assert "live" in states
    assert states.count("live") >= 2, states  # the socket was dropped and came back
    assert writer.refused == [], writer.refused
    assert len(writer.acknowledged) > 20
    with httpx.Client(
        base_url=deployment.proxy.url,
        headers={"Authorization": f"Bearer {guest['access_token']}"},
    ) as client:
        for instance in deployment.instances:
            seen = {task["id"] for task in client.get(f"{instance.url}/api/tasks").json()["tasks"]}
            assert set(writer.acknowledged) <= seen
    titles = {task["title"] for task in api_tasks(visitor)}
    assert titles == {"while instance 1 is down", "while instance 2 is down"}
