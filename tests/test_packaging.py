"""A regular, non-editable install carries everything the server needs (templates, static files)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        cwd=out,
    )
    (found,) = out.glob("tracker-*.whl")
    return found


def test_the_wheel_holds_the_templates_and_static_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tracker/web/templates/index.html" in names
    assert "tracker/web/templates/task.html" in names
    assert "tracker/web/static/app.css" in names
    assert "tracker/web/static/js/board.js" in names
    assert "tracker/web/static/sounds/chime.wav" in names
    assert "tracker/py.typed" in names
    assert any(name.endswith("entry_points.txt") for name in names)


@pytest.mark.slow
def test_an_installed_wheel_serves_the_app(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "TRACKER_ACCESS_LOG": "0"}
    where = subprocess.run(
        [sys.executable, "-c", "import tracker; print(tracker.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(target))
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tracker", "serve", "--port", str(port), "--db", "t.db"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            _wait_until_up(client)
            page = client.get("/")
            assert page.status_code == 200
            assert '<script type="module" src="/static/js/board.js">' in page.text
            for asset in ("app.css", "js/board.js", "sounds/chime.wav"):
                assert client.get(f"/static/{asset}").status_code == 200, asset
            created = client.post(
                "/api/tasks",
                json={"title": "from the wheel"},
                headers={"Origin": f"http://127.0.0.1:{port}"},
            )
            assert created.status_code == 201
    finally:
        server.terminate()
        assert server.wait(timeout=15) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(client: httpx.Client) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the installed server did not start")
