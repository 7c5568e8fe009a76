"""compose/ (the compose files, the Dockerfile, haproxy.cfg), checked without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

COMPOSE_DIR = Path(settings.BASE_DIR) / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
STANDBY_FILE = COMPOSE_DIR / "docker-compose.standby.yml"
PGBOUNCER_FILE = COMPOSE_DIR / "docker-compose.pgbouncer.yml"
PATRONI_FILE = COMPOSE_DIR / "docker-compose.patroni.yml"
COMPOSE_FILES = [COMPOSE_FILE, STANDBY_FILE, PGBOUNCER_FILE, PATRONI_FILE]
HAPROXY_CFG = COMPOSE_DIR / "haproxy.cfg"
PATRONI_CFG = COMPOSE_DIR / "haproxy-patroni.cfg"
HAPROXY_MISSING = (
    "Debian's haproxy is not installed (scripts/test installs it with "
    "`apt-get install -y haproxy` when run as root)"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def standby_services() -> dict[str, Any]:
    return yaml.safe_load(STANDBY_FILE.read_text())["services"]


def haproxy_section(name: str, config: Path = HAPROXY_CFG) -> list[str]:
    """Return the lines of one section of an HAProxy config, comments dropped."""
    lines: list[str] = []
    inside = False
    for raw in config.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            inside = line.split() == name.split()
            continue
        if inside:
            lines.append(line.strip())
    return lines


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Return {volume: mount point} for a service's volumes."""
    return {entry.split(":")[0]: entry.split(":")[1] for entry in service["volumes"]}


def test_services_are_postgres_haproxy_web_websocket_and_reconciler(
    services: dict[str, Any],
) -> None:
    assert sorted(services) == ["haproxy", "postgres", "reconciler", "web", "websocket"]


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.name)
def test_web_migrates_then_runs_the_kindler_web_server(compose_file: Path) -> None:
    web = yaml.safe_load(compose_file.read_text())["services"]["web"]
    assert web["command"] == [
        "sh",
        "-c",
        "python manage.py migrate --no-input && exec python -m kindler.webserver",
    ]


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.name)
def test_the_web_server_listens_on_every_interface_of_the_container(compose_file: Path) -> None:
    web = yaml.safe_load(compose_file.read_text())["services"]["web"]
    assert web["environment"]["KINDLER_BIND"] == "0.0.0.0:8000"


def test_the_web_image_runs_the_kindler_web_server() -> None:
    web = dockerfile_stages()["web"]
    assert [line for line in web if line.startswith("CMD ")] == [
        'CMD ["python", "-m", "kindler.webserver"]'
    ]


def test_reconciler_runs_the_reconcile_command(services: dict[str, Any]) -> None:
    assert services["reconciler"]["command"] == ["python", "manage.py", "reconcile"]


def test_reconciler_waits_for_the_migrated_web_service(services: dict[str, Any]) -> None:
    assert services["reconciler"]["depends_on"] == {"web": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", ["web", "reconciler"])
def test_kindler_reads_config_secrets_env(services: dict[str, Any], name: str) -> None:
    env_file = COMPOSE_DIR / services[name]["env_file"]
    assert env_file.resolve() == (Path(settings.BASE_DIR) / "config" / "secrets.env").resolve()


def test_kindler_reaches_postgres_through_haproxy(services: dict[str, Any]) -> None:
    environment = services["web"]["environment"]
    assert (environment["PG_HOST"], environment["PG_PORT"]) == ("haproxy", "5432")


def test_the_reconciler_reaches_postgres_through_haproxys_published_port(
    services: dict[str, Any],
) -> None:
    environment = services["reconciler"]["environment"]
    published = f"127.0.0.1:{environment['PG_PORT']}:5432"
    assert (environment["PG_HOST"], published in services["haproxy"]["ports"]) == (
        "127.0.0.1",
        True,
    )


def test_the_reconciler_drives_the_hosts_docker(services: dict[str, Any]) -> None:
    reconciler = services["reconciler"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in reconciler["volumes"]
    assert reconciler["network_mode"] == "host"
    assert reconciler["group_add"] == ["${DOCKER_GID:-999}"]


def test_the_web_service_has_no_docker_socket(services: dict[str, Any]) -> None:
    assert [v for v in services["web"]["volumes"] if "docker.sock" in v] == []
    assert "network_mode" not in services["web"]


def test_web_and_reconciler_are_built_from_their_own_targets(services: dict[str, Any]) -> None:
    targets = {name: services[name]["build"]["target"] for name in ("web", "reconciler")}
    images = {services["web"]["image"], services["reconciler"]["image"]}
    assert (targets, len(images)) == ({"web": "web", "reconciler": "reconciler"}, 2)


def dockerfile_stages() -> dict[str, list[str]]:
    """Return the Dockerfile's instructions (continuation lines joined) by stage name."""
    text = re.sub(r"\\\n", " ", (COMPOSE_DIR / "Dockerfile").read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [])
        current.append(line)
    return stages


def test_the_web_image_downloads_no_provider_or_docker_cli() -> None:
    web = " ".join(dockerfile_stages()["web"])
    assert (re.search(r"\b(k3d|kind|docker)\b", web.lower()), "curl" in web) == (None, False)


DOWNLOADS = ("DOCKER", "K3D", "KIND")


@pytest.mark.parametrize("tool", DOWNLOADS)
def test_the_reconciler_image_pins_each_download_and_checks_its_sha256(tool: str) -> None:
    stage = dockerfile_stages()["reconciler"]
    args = dict(
        line.removeprefix("ARG ").split("=", 1) for line in stage if line.startswith("ARG ")
    )
    run = " ".join(line for line in stage if line.startswith("RUN "))
    version, checksum = args[f"{tool}_VERSION"], args[f"{tool}_SHA256"]
    [(url, target)] = [
        (url, target)
        for target, url in re.findall(r'curl [^;]*-o (\S+)\s+"([^"]+)"', run)
        if f"${{{tool}_VERSION}}" in url
    ]
    check = f'echo "${{{tool}_SHA256}}  {target}" | sha256sum -c -'
    assert (
        bool(re.fullmatch(r"v?\d+\.\d+\.\d+", version)),
        bool(re.fullmatch(r"[0-9a-f]{64}", checksum)),
        url.startswith("https://"),
        check in run,
        run.index(check) > run.index(target),
    ) == (True, True, True, True, True)


def test_every_reconciler_download_is_checked() -> None:
    run = " ".join(line for line in dockerfile_stages()["reconciler"] if line.startswith("RUN "))
    downloads = re.findall(r"curl [^;]*-o (\S+)", run)
    checked = re.findall(r'echo "\$\{\w+_SHA256\}  (\S+)" \| sha256sum -c -', run)
    assert sorted(downloads) == sorted(checked) == ["docker.tgz", "k3d", "kind"]


def test_haproxy_listens_where_kindler_connects(services: dict[str, Any]) -> None:
    port = services["web"]["environment"]["PG_PORT"]
    assert f"bind :{port}" in haproxy_section("listen postgres")


def test_haproxy_forwards_to_the_postgres_service(services: dict[str, Any]) -> None:
    servers = [line for line in haproxy_section("listen postgres") if line.startswith("server ")]
    assert [line.split()[2] for line in servers] == ["postgres:5432"]


@pytest.mark.parametrize("name", ["web", "reconciler"])
def test_kindler_keeps_its_sqlite_file_on_a_volume(services: dict[str, Any], name: str) -> None:
    sqlite_dir = str(Path(services[name]["environment"]["SQLITE_PATH"]).parent)
    assert named_volumes(services[name])["sqlite-data"] == sqlite_dir


def test_postgres_keeps_its_data_on_a_volume(services: dict[str, Any]) -> None:
    assert named_volumes(services["postgres"]) == {"postgres-data": "/var/lib/postgresql/data"}


def test_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    used = {
        name
        for service in compose["services"].values()
        for name in named_volumes(service)
        if not name.startswith((".", "/"))
    }
    assert used == set(compose["volumes"])


def test_haproxy_mounts_the_repository_config(services: dict[str, Any]) -> None:
    volumes = named_volumes(services["haproxy"])
    assert volumes["./haproxy.cfg"] == "/usr/local/etc/haproxy/haproxy.cfg"


def test_web_publishes_the_port_the_web_server_binds(services: dict[str, Any]) -> None:
    bind_port = services["web"]["environment"]["KINDLER_BIND"].rsplit(":", 1)[1]
    assert services["web"]["ports"] == [f"127.0.0.1:{bind_port}:{bind_port}"]


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.name)
def test_the_websocket_server_runs_beside_the_web_server(compose_file: Path) -> None:
    services = yaml.safe_load(compose_file.read_text())["services"]
    websocket = services["websocket"]
    assert websocket["command"] == [
        "python",
        "-m",
        "kindler.wsserver",
        "clusters.websocket:application",
    ]
    # The same instance as the web service: its settings, its database, its SQLite volume.
    assert websocket["environment"] == services["web"]["environment"]
    assert websocket["volumes"] == services["web"]["volumes"]
    assert websocket["depends_on"] == {"web": {"condition": "service_healthy"}}


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.name)
def test_the_websocket_service_publishes_the_port_it_binds(compose_file: Path) -> None:
    websocket = yaml.safe_load(compose_file.read_text())["services"]["websocket"]
    host, port = websocket["environment"]["KINDLER_WS_BIND"].rsplit(":", 1)
    assert host == "0.0.0.0"
    assert websocket["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_web_health_check_calls_the_health_endpoint(services: dict[str, Any]) -> None:
    assert "http://127.0.0.1:8000/api/health" in services["web"]["healthcheck"]["test"][-1]


def test_postgres_account_comes_from_the_kindler_variables(services: dict[str, Any]) -> None:
    assert services["postgres"]["environment"] == {
        "POSTGRES_DB": "${PG_DATABASE:-kindler}",
        "POSTGRES_USER": "${PG_USER:-kindler}",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/pg_password",
    }


@pytest.mark.parametrize("name", ["postgres", "web", "reconciler"])
def test_the_postgres_password_is_a_docker_secret(services: dict[str, Any], name: str) -> None:
    assert services[name]["secrets"] == ["pg_password"]


def test_kindler_reads_the_password_from_the_secret(services: dict[str, Any]) -> None:
    environment = services["web"]["environment"]
    assert (environment["PG_PASSWORD_FILE"], "PG_PASSWORD" in environment) == (
        "/run/secrets/pg_password",
        False,
    )


@pytest.mark.parametrize("compose_file", [COMPOSE_FILE, STANDBY_FILE, PATRONI_FILE])
def test_secret_files_live_where_git_and_docker_ignore_them(compose_file: Path) -> None:
    declared = yaml.safe_load(compose_file.read_text())["secrets"]
    folders = {str((COMPOSE_DIR / s["file"]).resolve().parent) for s in declared.values()}
    root = Path(settings.BASE_DIR)
    ignored = {
        name: (root / name).read_text().splitlines() for name in (".gitignore", ".dockerignore")
    }
    assert (
        folders,
        "config/secrets/" in ignored[".gitignore"],
        "config/secrets/" in ignored[".dockerignore"],
    ) == ({str(root / "config" / "secrets")}, True, True)


@pytest.mark.parametrize("name", ["web", "reconciler"])
def test_the_standby_example_lists_both_servers(
    standby_services: dict[str, Any], name: str
) -> None:
    environment = standby_services[name]["environment"]
    assert (environment["PG_HOST"], environment["PG_PORT"]) == ("pg-primary,pg-standby", "5432")
    assert set(standby_services) >= {"pg-primary", "pg-standby"}


def test_the_standby_clones_the_primary_with_basebackup(standby_services: dict[str, Any]) -> None:
    entrypoint = standby_services["pg-standby"]["entrypoint"][-1]
    volumes = dict(v.rsplit(":", 2)[:2] for v in standby_services["pg-standby"]["volumes"])
    script = (COMPOSE_DIR / next(k for k, v in volumes.items() if v == entrypoint)).read_text()
    assert ("pg_basebackup" in script, "--write-recovery-conf" in script) == (True, True)


@pytest.mark.parametrize("compose_file", [COMPOSE_FILE, STANDBY_FILE, PATRONI_FILE])
def test_every_interpolated_variable_is_in_secrets_env_example(compose_file: Path) -> None:
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", compose_file.read_text()))
    example = (Path(settings.BASE_DIR) / "config" / "secrets.env.example").read_text()
    documented = set(re.findall(r"^#?(\w+)=", example, re.MULTILINE))
    assert used - documented == set()


def test_kindler_image_is_built_from_the_repository_dockerfile(services: dict[str, Any]) -> None:
    build = services["web"]["build"]
    assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == (
        COMPOSE_DIR / "Dockerfile"
    ).resolve()


def test_image_never_contains_secrets_env() -> None:
    ignored = (Path(settings.BASE_DIR) / ".dockerignore").read_text().splitlines()
    assert "config/secrets.env" in ignored


def test_haproxy_proxies_tcp() -> None:
    assert "mode tcp" in haproxy_section("listen postgres")


def test_haproxy_health_checks_postgres_with_inter_fall_rise() -> None:
    section = haproxy_section("listen postgres")
    default_server = next(line for line in section if line.startswith("default-server "))
    assert default_server.split()[1:7] == ["inter", "1s", "fall", "2", "rise", "2"]
    assert 'option pgsql-check user "${PG_USER-kindler}"' in section


def test_haproxy_server_is_health_checked() -> None:
    server = next(line for line in haproxy_section("listen postgres") if line.startswith("server "))
    assert "check" in server.split()


def test_haproxy_has_an_admin_runtime_socket() -> None:
    stats = [line for line in haproxy_section("global") if line.startswith("stats socket ")]
    assert stats[0].split()[2:] == [
        "/var/lib/haproxy/admin.sock",
        "mode",
        "660",
        "level",
        "admin",
        "expose-fd",
        "listeners",
    ]


def test_the_patroni_example_sends_connections_only_to_the_primary() -> None:
    section = haproxy_section("listen postgres-primary", PATRONI_CFG)
    servers = [line.split() for line in section if line.startswith("server ")]
    assert (
        "option httpchk GET /primary" in section,
        "http-check expect status 200" in section,
        {tuple(server[3:6]) for server in servers},
    ) == (True, True, {("check", "port", "8008")})


@pytest.mark.parametrize("config", [HAPROXY_CFG, PATRONI_CFG])
def test_haproxy_accepts_the_config(config: Path) -> None:
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy is None:
        pytest.skip(HAPROXY_MISSING)
    result = subprocess.run(
        [haproxy, "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HAPROXY_STATS_USER": "admin", "HAPROXY_STATS_PASSWORD": "pw"},
    )
    assert (result.returncode, result.stdout.strip().splitlines()[-1]) == (
        0,
        "Configuration file is valid",
    )


@pytest.mark.parametrize("config", [HAPROXY_CFG, PATRONI_CFG])
def test_haproxy_stats_page_needs_a_password(config: Path) -> None:
    assert 'stats auth "${HAPROXY_STATS_USER}:${HAPROXY_STATS_PASSWORD}"' in haproxy_section(
        "listen stats", config
    )


def test_compose_refuses_to_start_haproxy_without_a_stats_password(
    services: dict[str, Any],
) -> None:
    environment = services["haproxy"]["environment"]
    assert environment["HAPROXY_STATS_PASSWORD"].startswith("${HAPROXY_STATS_PASSWORD:?")
