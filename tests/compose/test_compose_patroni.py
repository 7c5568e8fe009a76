"""compose/docker-compose.patroni.yml and its Patroni image, checked without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose.test_compose import COMPOSE_DIR, PATRONI_CFG, PATRONI_FILE, haproxy_section

DOCKERFILE = COMPOSE_DIR / "Dockerfile.patroni"
NODES = ["pg1", "pg2"]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(PATRONI_FILE.read_text())["services"]


def dockerfile() -> str:
    return re.sub(r"\\\n", " ", DOCKERFILE.read_text())


def test_services_are_etcd_two_patroni_nodes_haproxy_and_kindler(
    services: dict[str, Any],
) -> None:
    assert sorted(services) == [
        "etcd",
        "haproxy",
        "pg1",
        "pg2",
        "reconciler",
        "web",
        "websocket",
    ]


@pytest.mark.parametrize("name", ["web", "reconciler"])
def test_kindler_reaches_the_leader_through_haproxy(services: dict[str, Any], name: str) -> None:
    environment = services[name]["environment"]
    assert (environment["PG_HOST"], environment["PG_PORT"]) == ("haproxy", "5432")


@pytest.mark.parametrize("name", ["web", "reconciler"])
def test_kindler_asks_every_nodes_rest_api_for_the_member_name(
    services: dict[str, Any], name: str
) -> None:
    api = services[name]["environment"]["KINDLER_PATRONI_API"]
    nodes = [
        "http://" + services[node]["environment"]["PATRONI_RESTAPI_CONNECT_ADDRESS"]
        for node in ("pg1", "pg2")
    ]
    assert api.split(",") == nodes


def test_haproxy_runs_the_patroni_example_config(services: dict[str, Any]) -> None:
    volumes = services["haproxy"]["volumes"]
    assert volumes == ["./haproxy-patroni.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]


def test_haproxy_checks_every_node_on_its_rest_port(services: dict[str, Any]) -> None:
    servers = [
        line.split()
        for line in haproxy_section("listen postgres-primary", PATRONI_CFG)
        if line.startswith("server ")
    ]
    checked = {server[1]: (server[2], server[5]) for server in servers}
    nodes = {
        name: (
            services[name]["environment"]["PATRONI_POSTGRESQL_CONNECT_ADDRESS"],
            services[name]["environment"]["PATRONI_RESTAPI_CONNECT_ADDRESS"].rsplit(":", 1)[1],
        )
        for name in NODES
    }
    assert {name: checked[name] for name in NODES} == nodes


@pytest.mark.parametrize("name", NODES)
def test_each_node_is_built_from_the_patroni_dockerfile_and_keeps_its_data(
    services: dict[str, Any], name: str
) -> None:
    node = services[name]
    build = node["build"]
    assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert node["volumes"] == [f"{name}-data:/data/patroni"]
    assert node["environment"]["PATRONI_NAME"] == name
    assert node["environment"]["PATRONI_ETCD3_HOSTS"] == "'etcd:2379'"


def test_etcd_runs_from_the_same_image_and_keeps_its_data(services: dict[str, Any]) -> None:
    etcd = services["etcd"]
    assert (etcd["image"], etcd["command"][0], etcd["volumes"]) == (
        services["pg1"]["image"],
        "etcd",
        ["etcd-data:/data/etcd"],
    )


def test_the_image_installs_debians_packages_at_pinned_versions() -> None:
    text = dockerfile()
    install = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", text)
    assert install is not None
    packages = install.group(1).split()
    versions = dict(re.findall(r"^ARG (\w+_VERSION)=(\S+)$", DOCKERFILE.read_text(), re.M))
    unpinned = [p for p in packages if "=" not in p]
    assert (re.search(r"^FROM debian:bookworm-slim$", text, re.M) is not None, unpinned) == (
        True,
        [],
    )
    named = {p.strip('"').split("=")[0] for p in packages}
    assert named == {
        "postgresql-15",
        "postgresql-client-15",
        "patroni",
        "python3-etcd",
        "etcd-server",
    }
    assert all(versions.values())


def test_the_image_copies_files_that_exist() -> None:
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile(), re.M)
    sources = [Path(part) for line in copied for part in line.split()]
    root = COMPOSE_DIR.parent
    assert [str(path) for path in sources if not (root / path).is_file()] == []


def test_patroni_takes_passwords_from_docker_secrets_only() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "patroni" / "patroni.yml").read_text())
    users = config["postgresql"]["authentication"]
    entrypoint = (COMPOSE_DIR / "patroni" / "entrypoint.sh").read_text()
    assert ([name for name, user in users.items() if "password" in user]) == []
    assert "/run/secrets/pg_superuser_password" in entrypoint
    assert "/run/secrets/pg_replication_password" in entrypoint


def test_replication_is_asynchronous_as_the_docs_describe() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "patroni" / "patroni.yml").read_text())
    dcs = config["bootstrap"]["dcs"]
    assert (dcs["synchronous_mode"], dcs["postgresql"]["use_pg_rewind"]) == (False, True)


def test_the_bootstrap_creates_kindlers_role_and_database() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "patroni" / "patroni.yml").read_text())
    script = config["bootstrap"]["post_bootstrap"]
    text = (COMPOSE_DIR / "patroni" / Path(script).name).read_text()
    assert ("CREATE ROLE" in text, "createdb" in text, "/run/secrets/pg_password" in text) == (
        True,
        True,
        True,
    )
