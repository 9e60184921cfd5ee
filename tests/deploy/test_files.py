"""The Dockerfile, the compose files and the proxy's configuration, read as text and held
to each other and to the README: what they name, publish and set is what the README's
Deployment section and Configuration table say, and none of them carries a secret."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ("compose.yaml", "compose.sqlite.yaml")
PORT = 6969

Instruction = tuple[str, str]


# reading the files


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined and
    comments left out (also those inside a continued instruction, as Docker does)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage, its FROM first."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def exec_form(arguments: str) -> list[str]:
    """A JSON (exec form) argument list; the shell form is refused."""
    value = json.loads(arguments)
    assert isinstance(value, list), arguments
    assert all(isinstance(item, str) for item in value), arguments
    return [str(item) for item in value]


def compose(name: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(document, dict)
    return document


def services(name: str) -> dict[str, dict[str, Any]]:
    found = compose(name)["services"]
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, written as a mapping or as a list of NAME=value."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (str(item).partition("=") for item in raw)
        return {name: value for name, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def with_defaults(value: str) -> str:
    """A compose value as it reads with nothing set in the environment or `.env`: each
    `${NAME:-default}` becomes its default, every other reference nothing."""
    return INTERPOLATION.sub(
        lambda match: match["arg"] if match["op"] in (":-", "-") else "", value
    )


def published_ports(service: dict[str, Any]) -> list[int]:
    ports: list[int] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(int(with_defaults(str(entry["published"]))))
        else:
            # [host address:]published:target[/protocol]
            parts = with_defaults(str(entry)).split("/")[0].split(":")
            assert len(parts) >= 2, f"{entry}: publish a fixed port, not a random one"
            ports.append(int(parts[-2]))
    return ports


def section(title: str) -> str:
    """The README's section with that `## ` title, up to the next one."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def documented_settings() -> set[str]:
    """The variables of the README's Configuration table."""
    return set(re.findall(r"^\| `(TRACKER_\w+)` \|", section("Configuration"), re.MULTILINE))


def tracker_variables() -> Iterator[tuple[str, str]]:
    """(file, variable) for every TRACKER_* name the Dockerfile and compose files use."""
    for name in ("Dockerfile", *COMPOSE_FILES):
        for variable in sorted(
            set(re.findall(r"\bTRACKER_[A-Z0-9_]+\b", (ROOT / name).read_text()))
        ):
            yield name, variable


# the Dockerfile


def test_every_stage_starts_from_the_base_given_as_a_build_argument() -> None:
    instructions = dockerfile()
    first_from = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    args = [arguments for keyword, arguments in instructions[:first_from] if keyword == "ARG"]
    assert "BASE=python:3.12-slim" in args
    found = stages(instructions)
    assert len(found) >= 2, "a build stage, and a final stage that copies only the venv"
    for stage in found:
        image = stage[0][1].split()[0]
        assert image == "${BASE}", stage[0]
    final = found[-1]
    copies = [arguments for keyword, arguments in final if keyword == "COPY"]
    assert copies, "the final stage copies the virtual environment from the build stage"
    assert all(arguments.startswith("--from=") for arguments in copies), copies


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    final = stages(dockerfile())[-1]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user


def test_the_database_is_on_the_data_volume() -> None:
    final = stages(dockerfile())[-1]
    volumes = [
        exec_form(arguments) if arguments.startswith("[") else arguments.split()
        for keyword, arguments in final
        if keyword == "VOLUME"
    ]
    assert any("/data" in paths for paths in volumes), volumes
    env = " ".join(arguments for keyword, arguments in final if keyword == "ENV")
    assert "TRACKER_DB=/data/tracker.db" in env.split()


def test_it_serves_on_all_addresses_on_the_tracker_port_with_a_health_check() -> None:
    final = stages(dockerfile())[-1]
    assert ("EXPOSE", str(PORT)) in final
    (cmd,) = [exec_form(arguments) for keyword, arguments in final if keyword == "CMD"]
    assert cmd[:2] == ["tracker", "serve"], cmd
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", cmd
    assert "--port" not in cmd or cmd[cmd.index("--port") + 1] == str(PORT), cmd
    (check,) = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    command = check[check.index("CMD ") + len("CMD ") :]
    test = exec_form(command)
    # No curl in a slim image: the venv's python asks /healthz.
    assert test[0].startswith("/opt/"), test
    assert test[0].endswith("/python"), test
    assert "/healthz" in " ".join(test)
    assert str(PORT) in " ".join(test)


def test_the_image_holds_no_secret_and_no_settings_file() -> None:
    for keyword, arguments in dockerfile():
        if keyword in ("ENV", "ARG", "LABEL"):
            assert "SECRET" not in arguments, arguments
            assert "DATABASE_URL" not in arguments, arguments
            assert "PASSWORD" not in arguments, arguments
        if keyword in ("COPY", "ADD"):
            assert ".env" not in arguments, "settings come from the environment only"


# .dockerignore


def _pattern(glob: str) -> re.Pattern[str]:
    """Docker's ignore-file glob as a regular expression over a slash-separated path."""
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        elif glob[i] == "[":
            end = glob.index("]", i)
            out, i = out + glob[i : end + 1], end + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context: the last pattern that
    matches the path or one of its parent directories decides."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        glob = line.lstrip("!").strip().strip("/")
        rules.append((keep, _pattern(glob)))
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for keep, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            result = not keep
    return result


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "bench/results/latest.json",
        "tracker.db",
        "tracker.db-wal",
        "tracker.db.secret",
        "data/tracker.db",
        ".env",
        "tracker/.env",
        "tracker/__pycache__/app.cpython-311.pyc",
        "tracker/events/__pycache__/store.cpython-311.pyc",
        "build/e2e/board.png",
        "tracker.egg-info/PKG-INFO",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert ignored(path)


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    for keyword, arguments in dockerfile():
        if keyword != "COPY" or arguments.startswith("--from="):
            continue
        *sources, _ = arguments.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            paths = (
                [source]
                if (ROOT / source).is_file()
                else [
                    str(p.relative_to(ROOT))
                    for p in (ROOT / source).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                ]
            )
            assert paths, source
            for path in paths:
                assert not ignored(path), path


# the compose files


def test_the_services_are_named_in_the_readme() -> None:
    deployment = section("Deployment")
    assert set(services("compose.yaml")) == {"postgres", "tracker-1", "tracker-2", "proxy"}
    for name in COMPOSE_FILES:
        for service in services(name):
            assert f"`{service}`" in deployment, f"{name}: service {service}"
        assert f"`{name}`" in deployment


def test_the_published_ports_are_in_the_readme() -> None:
    deployment = section("Deployment")
    for name in COMPOSE_FILES:
        published = [port for s in services(name).values() for port in published_ports(s)]
        assert published, f"{name} publishes a port"
        for port in published:
            assert re.search(rf"\b{port}\b", deployment), f"{name}: port {port}"
    # On PostgreSQL only the proxy is reachable from outside.
    for service_name, service in services("compose.yaml").items():
        assert (service_name == "proxy") == bool(service.get("ports")), service_name


@pytest.mark.parametrize(("file", "variable"), list(tracker_variables()))
def test_every_tracker_variable_is_in_the_configuration_table(file: str, variable: str) -> None:
    assert variable in documented_settings(), f"{file} uses {variable}"


def test_the_instances_share_postgres_behind_the_proxy() -> None:
    found = services("compose.yaml")
    for name in ("tracker-1", "tracker-2"):
        service = found[name]
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").is_file(), f"{name} is built from the Dockerfile"
        env = environment(service)
        assert env["TRACKER_TRUST_PROXY"] == "1"
        url = env["TRACKER_DATABASE_URL"]
        assert url.startswith("postgresql://"), url
        assert "@postgres:5432/" in url, url
        assert "postgres" in service["depends_on"]
    postgres = found["postgres"]
    assert str(postgres["image"]).startswith("postgres:")
    assert "healthcheck" in postgres
    (volume,) = postgres["volumes"]
    assert volume.split(":")[0] in compose("compose.yaml")["volumes"], "a named volume"


def test_the_sqlite_variant_keeps_its_log_in_a_volume() -> None:
    (service,) = services("compose.sqlite.yaml").values()
    assert "build" in service
    assert any(str(v).endswith(":/data") for v in service["volumes"])
    (volume,) = service["volumes"]
    assert volume.split(":")[0] in compose("compose.sqlite.yaml")["volumes"]
    assert "TRACKER_DATABASE_URL" not in environment(service)
    assert published_ports(service) == [PORT]


def test_the_proxy_mounts_deploy_nginx_conf_and_matches_it() -> None:
    proxy = services("compose.yaml")["proxy"]
    assert str(proxy["image"]).startswith("nginx:")
    mounts = [str(volume).split(":") for volume in proxy["volumes"]]
    assert ["./deploy/nginx.conf", "/etc/nginx/conf.d/default.conf", "ro"] in mounts
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.MULTILINE))
    assert upstreams == {("tracker-1", str(PORT)), ("tracker-2", str(PORT))}
    (target,) = [str(entry).rsplit(":", 1)[-1] for entry in proxy["ports"]]
    assert re.search(rf"^\s*listen\s+{target};", conf, re.MULTILINE)
    # The client's own X-Forwarded-For is replaced, never appended to: Tracker believes the
    # header's first address.
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr;", conf)


SECRET_NAMES = ("TRACKER_SECRET_KEY", "POSTGRES_PASSWORD")


def test_the_compose_files_carry_no_secret() -> None:
    for name in COMPOSE_FILES:
        for service_name, service in services(name).items():
            for variable, value in environment(service).items():
                where = f"{name}: {service_name}.{variable}"
                if variable in SECRET_NAMES:
                    match = INTERPOLATION.fullmatch(value)
                    assert match is not None, where
                    assert match["name"] == variable, where
                    # No default but an empty one ("make a key yourself").
                    assert match["op"] not in (":-", "-") or match["arg"] == "", where
                if variable == "TRACKER_DATABASE_URL":
                    password = value.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
                    match = INTERPOLATION.fullmatch(password)
                    assert match is not None, where
                    assert match["name"] == "POSTGRES_PASSWORD", where
    sqlite = environment(services("compose.sqlite.yaml")["tracker"])
    assert with_defaults(sqlite.get("TRACKER_SECRET_KEY", "")) == "", (
        "unset, Tracker makes its own key into the volume"
    )


def test_the_secrets_come_from_a_gitignored_env_file_described_by_the_example() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    example = (ROOT / "deploy" / "env.example").read_text()
    pairs = (line.partition("=") for line in example.splitlines() if line and line[0] != "#")
    values = {name: value for name, _, value in pairs}
    for variable in SECRET_NAMES:
        assert values.get(variable) == "", f"{variable}: an empty placeholder, never a value"
    assert "secrets.token_urlsafe" in example, "says how to make a key"
    assert "`.env`" in section("Deployment")
    assert "deploy/env.example" in section("Deployment")
