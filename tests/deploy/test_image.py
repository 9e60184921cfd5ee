"""The container image, built from the Dockerfile and served from its own files.

There is no Docker engine here and no registry to pull `python:3.12-slim` from, so, as
shared/CONTAINERS.md describes: a bare Debian base made with `debootstrap` and imported
into podman (kept as `localhost/debian:bookworm` for later runs on the same machine),
`podman build` with chroot isolation on it, then the image mounted and its command
(`tracker serve`, as the image's user, with the image's environment and working
directory, a temporary directory as its `/data` volume) run through `chroot` on a free
loopback port. `podman run` does not work on this kind of machine (cgroups in hybrid
mode), so what the container runtime adds (the health check's schedule, the volume's
creation) is read from the image's configuration instead.
"""

from __future__ import annotations

import configparser
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/debian:bookworm"
SUITE = "bookworm"
PORT = 6969
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MAX_NPROC = 32768

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _missing() -> str | None:
    """Why this machine cannot build and run the image, or None."""
    if os.geteuid() != 0:
        return "needs root (podman build with chroot isolation, chroot, bind mounts)"
    for tool in ("podman", "unshare", "chroot", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs podman and debootstrap)"
    return None


def _run(
    args: list[str], *, timeout: float, log: Path | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; with `log`, its output goes there (and its tail into the
    failure message)."""
    if log is None:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
        output = result.stdout + result.stderr
    else:
        with log.open("w") as out:
            result = subprocess.run(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
                **kwargs,
            )
        output = log.read_text()
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        pytest.fail(f"{' '.join(args[:3])} ... exited {result.returncode}:\n{tail}")
    return result


def _image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def _unmount_under(path: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted inside its target (/proc, /sys),
    deepest first, before the directory is removed."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    """Seconds per phase, printed at the end of the module (`pytest -s` shows them)."""
    found: dict[str, float] = {}
    yield found
    print("\nimage test timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in found.items()))


@pytest.fixture(scope="module")
def base_image(timings: dict[str, float]) -> str:
    """A bare Debian base in podman: reused when this machine has one already (the only
    thing this test keeps between runs), else made with debootstrap and imported."""
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    if _image_exists(BASE_IMAGE):
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (.ci/run installs podman and debootstrap)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="tracker-base-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    try:
        _run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs)],
            timeout=900,
            log=work / "debootstrap.log",
        )
        # The packages debootstrap downloaded and its package lists: the image needs neither
        # (its Dockerfile runs apt-get update before it installs anything).
        for leftover in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            leftover.unlink()
        for lists in (rootfs / "var/lib/apt/lists").iterdir():
            if lists.is_file():
                lists.unlink()
        # A unique name first, the shared one once it is complete: another run never sees a
        # half-imported base.
        staging = f"localhost/tracker-base-staging:{uuid.uuid4().hex[:12]}"
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(["podman", "import", "-", staging], timeout=600, stdin=tar.stdout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
        _run(["podman", "tag", staging, BASE_IMAGE], timeout=60)
        _run(["podman", "untag", staging, staging], timeout=60)
    finally:
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    timings["debootstrap and import"] = time.monotonic() - started
    return BASE_IMAGE


def _pip_settings(work: Path) -> list[str]:
    """`podman build` options that give pip inside the build this machine's package index
    settings: its pip.conf and index variables, with the CA bundle mounted at /hostcerts
    and pip.conf pointing there. (`--env PIP_CERT=...` would not do: podman puts it in the
    image's configuration, and a RUN step sees it only by way of an earlier step's
    committed layer, never with --layers=false.)"""
    config = configparser.ConfigParser(interpolation=None)
    host_conf = Path("/etc/pip.conf")
    if host_conf.is_file():
        config.read(host_conf)
    if not config.has_section("global"):
        config.add_section("global")
    for variable, key in (
        ("PIP_INDEX_URL", "index-url"),
        ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
        ("PIP_TRUSTED_HOST", "trusted-host"),
    ):
        if os.environ.get(variable):
            config.set("global", key, os.environ[variable])
    cert = os.environ.get("PIP_CERT") or config.get("global", "cert", fallback="")
    if not cert and Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        cert = "/etc/ssl/certs/ca-certificates.crt"
    options: list[str] = []
    if cert and Path(cert).is_file():
        bundle = Path(cert).resolve()
        config.set("global", "cert", f"/hostcerts/{bundle.name}")
        options += ["-v", f"{bundle.parent}:/hostcerts:ro"]
    elif config.has_option("global", "cert"):
        config.remove_option("global", "cert")
    if not host_conf.is_file() and not options and len(config.items("global")) == 0:
        return []
    conf = work / "pip.conf"
    with conf.open("w") as out:
        config.write(out)
    return ["-v", f"{conf}:/etc/pip.conf:ro", *options]


def _nproc_limit() -> int:
    """A process limit for the build no higher than this machine's (podman cannot raise it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    limits = [limit for limit in (soft, hard) if limit != resource.RLIM_INFINITY]
    return min([MAX_NPROC, *limits])


@pytest.fixture(scope="module")
def image(base_image: str, timings: dict[str, float]) -> Iterator[str]:
    """The image built from the repository's Dockerfile on the bare base, under a name of
    its own; removed afterwards (nothing of the build is kept: --layers=false)."""
    tag = f"localhost/tracker-image-test:{uuid.uuid4().hex[:12]}"
    work = Path(tempfile.mkdtemp(prefix="tracker-image-"))
    nproc = _nproc_limit()
    started = time.monotonic()
    try:
        _run(
            [
                "podman",
                "build",
                "--isolation",
                "chroot",
                "--cgroup-manager=cgroupfs",
                "--ulimit",
                f"nproc={nproc}:{nproc}",
                # The docker format keeps HEALTHCHECK (the OCI format has no field for it).
                "--format",
                "docker",
                "--layers=false",
                "--force-rm",
                *_pip_settings(work),
                "--build-arg",
                f"BASE={base_image}",
                "--tag",
                tag,
                "--file",
                str(ROOT / "Dockerfile"),
                str(ROOT),
            ],
            timeout=1200,
            log=work / "build.log",
        )
        timings["build"] = time.monotonic() - started
        yield tag
    finally:
        if _image_exists(tag):
            subprocess.run(["podman", "rmi", "--force", tag], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _inspect(tag: str) -> dict[str, Any]:
    result = _run(["podman", "image", "inspect", tag], timeout=60)
    (found,) = json.loads(result.stdout)
    assert isinstance(found, dict)
    return found


def _env_of(config: dict[str, Any]) -> dict[str, str]:
    """The image's environment (its ENV lines) as a mapping."""
    pairs = (str(item).partition("=") for item in config.get("Env") or [])
    return {name: value for name, _, value in pairs}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _user_ids(mount: Path, user: str) -> tuple[int, int]:
    """The uid and gid of the image's USER, from the image's own /etc/passwd."""
    name, _, group = user.partition(":")
    for line in (mount / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name or fields[2] == name:
            return int(fields[2]), int(group) if group.isdigit() else int(fields[3])
    raise AssertionError(f"the image's user {user!r} is not in its /etc/passwd")


class ImageProcess:
    """The image's command (or another one) run from its mounted files, as its user, with
    its environment and working directory, and a host directory bind-mounted as /data in a
    mount namespace of its own (gone with the process, whatever happens to the test)."""

    def __init__(self, mount: Path, config: dict[str, Any], data: Path, port: int) -> None:
        self.mount = mount
        self.config = config
        self.data = data
        self.port = port
        self.uid, self.gid = _user_ids(mount, str(config["User"]))

    def environment(self, **extra: str) -> dict[str, str]:
        env = _env_of(self.config)
        env.pop("PIP_CERT", None)
        return {**env, "TRACKER_PORT": str(self.port), **extra}

    def command(self, argv: list[str]) -> list[str]:
        script = (
            'mount --bind "$1" "$2/data" && root="$2" user="$3" dir="$4" && shift 4'
            ' && exec chroot --userspec="$user" "$root" env --chdir="$dir" "$@"'
        )
        unshare = shutil.which("unshare")
        assert unshare is not None
        return [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
            "sh",
            str(self.data),
            str(self.mount),
            f"{self.uid}:{self.gid}",
            str(self.config.get("WorkingDir") or "/"),
            *argv,
        ]

    def serve(self, log: Path, **extra: str) -> subprocess.Popen[bytes]:
        # The image's command as it is, then its address moved to the loopback (the last
        # --host wins): the test serves nothing on the machine's other interfaces.
        argv = [*self.config["Cmd"], "--host", "127.0.0.1", "--port", str(self.port)]
        with log.open("ab") as out:
            return subprocess.Popen(
                self.command(argv),
                env=self.environment(**extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )


def _wait_healthy(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the image's server exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"no answer on {base}/healthz within {START_TIMEOUT} s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, as a container runtime stops it; the exit status, or None if it had to be
    killed."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None


def test_the_image_builds_and_serves_the_app_from_its_own_files(
    image: str, tmp_path: Path, timings: dict[str, float]
) -> None:
    found = _inspect(image)
    config = found["Config"]
    assert config["User"] not in ("", "root", "0"), "the image runs as a user of its own"
    assert set(config.get("Volumes") or {}) == {"/data"}
    assert f"{PORT}/tcp" in (config.get("ExposedPorts") or {})
    assert config["Cmd"][:2] == ["tracker", "serve"], config["Cmd"]
    env = _env_of(config)
    assert env.get("TRACKER_DB") == "/data/tracker.db"
    assert not any(name in env for name in ("TRACKER_SECRET_KEY", "TRACKER_DATABASE_URL"))
    health = found.get("Healthcheck") or found.get("HealthCheck") or config.get("Healthcheck")
    assert health, "the image has a health check"
    assert "/healthz" in " ".join(health["Test"])
    print(f"\nimage size: {int(found['Size']) / 1e6:.0f} MB")

    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "serve.log"
    mounted = _run(["podman", "image", "mount", image], timeout=120).stdout.strip()
    process: subprocess.Popen[bytes] | None = None
    try:
        mount = Path(mounted)
        runner = ImageProcess(mount, config, data, _free_port())
        os.chown(data, runner.uid, runner.gid)
        data.chmod(0o700)
        base = f"http://127.0.0.1:{runner.port}"

        # With a key from the environment, as compose.yaml gives it.
        started = time.monotonic()
        process = runner.serve(log, TRACKER_SECRET_KEY=secrets.token_urlsafe(48))
        _wait_healthy(process, base, log)
        timings["serve to /healthz"] = time.monotonic() - started
        health_body = httpx.get(f"{base}/healthz", timeout=5).json()
        assert health_body["status"] == "ok", health_body
        guest = httpx.post(f"{base}/api/auth/guest", timeout=10)
        assert guest.status_code in (200, 201), guest.text
        token = guest.json()["access_token"]
        created = httpx.post(
            f"{base}/api/tasks",
            headers={"Authorization": f"Bearer {token}"},
            json={"title": "Shipped in a container"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert created.json()["title"] == "Shipped in a container"
        listed = httpx.get(
            f"{base}/api/tasks", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert [task["title"] for task in listed.json()["tasks"]] == ["Shipped in a container"]

        # The image's own health check command passes against it.
        test = health["Test"]
        argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        check = subprocess.run(
            runner.command(argv),
            env=runner.environment(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr

        assert _stop(process) == 0, f"a graceful stop exits 0:\n{log.read_text()}"
        database = data / "tracker.db"
        assert database.is_file()
        assert database.stat().st_uid == runner.uid, "the log belongs to the image's user"

        # Without a key, as compose.sqlite.yaml may run it: Tracker makes one into the
        # volume, and the log written before is still there.
        process = runner.serve(log)
        _wait_healthy(process, base, log)
        assert httpx.get(f"{base}/healthz", timeout=5).json()["position"] >= 2
        key = data / "tracker.db.secret"
        assert key.is_file(), sorted(p.name for p in data.iterdir())
        assert key.stat().st_uid == runner.uid
        assert key.stat().st_mode & 0o077 == 0, oct(key.stat().st_mode)
        assert _stop(process) == 0, f"a graceful stop exits 0:\n{log.read_text()}"
    finally:
        if process is not None:
            _stop(process)
        subprocess.run(["podman", "image", "unmount", image], capture_output=True, check=False)
