"""Command lines and state parsing of the k3d and kind drivers (clusters/drivers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clusters.drivers import ClusterStatus, DriverError, cluster_status, driver_for
from clusters.drivers.k3d import K3dDriver, parse_list
from clusters.drivers.kind import KindDriver, config
from tests.fakes import FakeTools


def spec(**overrides: object) -> SimpleNamespace:
    fields: dict[str, object] = {
        "name": "dev",
        "provider": "k3d",
        "http_port": 18090,
        "https_port": 18453,
        "pf_port": 19001,
        "node_port": 30080,
        "subnet": "",
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


KIND_CONFIG = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: dev
nodes:
- role: control-plane
  extraPortMappings:
  - containerPort: 80
    hostPort: 18090
    protocol: TCP
  - containerPort: 443
    hostPort: 18453
    protocol: TCP
  - containerPort: 30080
    hostPort: 19001
    protocol: TCP
"""


def test_driver_for_returns_the_provider_driver() -> None:
    assert [type(driver_for(p)) for p in ("k3d", "kind")] == [K3dDriver, KindDriver]


def test_driver_for_refuses_an_unknown_provider() -> None:
    with pytest.raises(ValueError, match=r"Unknown provider 'minikube'; use one of k3d, kind\."):
        driver_for("minikube")


def test_k3d_create_maps_the_ports_and_waits() -> None:
    command = K3dDriver().create(spec(), timeout=300)
    assert command.argv == (
        "k3d", "cluster", "create", "dev", "--servers", "1", "--agents", "0",
        "-p", "18090:80@loadbalancer", "-p", "18453:443@loadbalancer",
        "-p", "19001:30080@server:0", "--wait", "--timeout", "300s",
    )  # fmt: skip
    assert command.stdin is None


def test_k3d_create_passes_the_subnet() -> None:
    argv = K3dDriver().create(spec(subnet="10.101.0.0/16"), timeout=120).argv
    assert argv[-5:] == ("--subnet", "10.101.0.0/16", "--wait", "--timeout", "120s")


def test_k3d_create_displays_as_a_shell_command_line() -> None:
    assert K3dDriver().create(spec(), timeout=300).display() == (
        "k3d cluster create dev --servers 1 --agents 0 -p 18090:80@loadbalancer "
        "-p 18453:443@loadbalancer -p 19001:30080@server:0 --wait --timeout 300s"
    )


@pytest.mark.parametrize("operation", ["delete", "start", "stop"])
def test_k3d_delete_start_stop(operation: str) -> None:
    command = K3dDriver().command_for(operation, spec(), timeout=300)
    assert command.argv == ("k3d", "cluster", operation, "dev")


def test_kind_create_reads_its_config_from_stdin() -> None:
    command = KindDriver().create(spec(provider="kind"), timeout=300)
    assert command.argv == (
        "kind", "create", "cluster", "--name", "dev", "--config", "-", "--wait", "300s",
    )  # fmt: skip
    assert command.stdin == KIND_CONFIG


def test_kind_config_maps_http_https_and_node_ports() -> None:
    assert config(spec(provider="kind")) == KIND_CONFIG


def test_kind_delete() -> None:
    assert KindDriver().delete(spec()).argv == ("kind", "delete", "cluster", "--name", "dev")


@pytest.mark.parametrize("operation", ["start", "stop"])
def test_kind_start_and_stop_use_docker_on_the_node_container(operation: str) -> None:
    command = KindDriver().command_for(operation, spec(), timeout=300)
    assert command.argv == ("docker", operation, "dev-control-plane")


def test_k3d_list_output_becomes_statuses() -> None:
    output = (
        '[{"name": "dev", "serversCount": 1, "serversRunning": 1, "agentsCount": 2,'
        ' "agentsRunning": 1}, {"name": "uat", "serversCount": 1, "serversRunning": 0,'
        ' "agentsCount": 0, "agentsRunning": 0}]'
    )
    assert parse_list(output) == {
        "dev": ClusterStatus("dev", "running", 2, 3),
        "uat": ClusterStatus("uat", "stopped", 0, 1),
    }


def test_k3d_list_output_that_is_not_json_is_a_driver_error() -> None:
    with pytest.raises(DriverError, match="printed something that is not JSON"):
        parse_list("WARN[0000] something\n[]")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("[null]", "k3d cluster list -o json printed an entry without a name"),
        ('[{"serversCount": 1}]', "k3d cluster list -o json printed an entry without a name"),
        ('[{"name": ""}]', "k3d cluster list -o json printed an entry without a name"),
        ('[{"name": 7}]', "k3d cluster list -o json printed an entry without a name"),
        ("1e400", "k3d cluster list -o json did not print a list"),
        (
            '[{"name": "dev", "serversRunning": 1e400}]',
            "k3d cluster list -o json printed serversRunning inf, not a node count",
        ),
        (
            '[{"name": "dev", "agentsCount": "2"}]',
            "k3d cluster list -o json printed agentsCount '2', not a node count",
        ),
        (
            '[{"name": "dev", "serversCount": -1}]',
            "k3d cluster list -o json printed serversCount -1, not a node count",
        ),
        ("[" * 5000 + "]" * 5000, "k3d cluster list -o json printed something that is not JSON"),
    ],
)
def test_k3d_list_output_k3d_never_prints_is_a_driver_error(output: str, message: str) -> None:
    with pytest.raises(DriverError) as caught:
        parse_list(output)
    assert str(caught.value) == message


def test_cluster_status_is_unknown_when_k3d_prints_an_entry_without_a_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("clusters.drivers.k3d.capture", lambda argv: "[null]")
    assert cluster_status(spec()) == ClusterStatus("dev", "unknown", 0, 0)


def test_k3d_lists_what_the_fake_runs(fakes: FakeTools) -> None:
    fakes.add("dev", running=True)
    fakes.add("uat", running=False)
    assert K3dDriver().list_clusters() == {
        "dev": ClusterStatus("dev", "running", 1, 1),
        "uat": ClusterStatus("uat", "stopped", 0, 1),
    }
    assert fakes.calls() == [["k3d", "cluster", "list", "-o", "json"]]


def test_kind_lists_clusters_with_their_node_containers(fakes: FakeTools) -> None:
    fakes.add("dev", provider="kind", running=True)
    fakes.add("qa", provider="kind", running=False)
    assert KindDriver().list_clusters() == {
        "dev": ClusterStatus("dev", "running", 1, 1),
        "qa": ClusterStatus("qa", "stopped", 0, 1),
    }
    assert sorted(fakes.calls()) == [
        ["docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster",
         "--format", '{{.Label "io.x-k8s.kind.cluster"}}\t{{.State}}'],
        ["kind", "get", "clusters"],
    ]  # fmt: skip


def test_kind_with_no_clusters_lists_none(fakes: FakeTools) -> None:
    fakes.add("other", provider="k3d")
    assert KindDriver().list_clusters() == {}


def test_a_failing_listing_is_a_driver_error(
    fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "k3d:list")
    with pytest.raises(DriverError) as caught:
        K3dDriver().list_clusters()
    assert str(caught.value) == (
        "k3d cluster list -o json exited with status 1: "
        "FATA[0000] Failed to list clusters: Cannot connect to the Docker daemon"
    )


def test_listing_without_the_binary_says_it_is_not_on_path(
    fakes: FakeTools, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DriverError, match=r"^kind not found on PATH$"):
        KindDriver().list_clusters()


def test_cluster_status_reports_nodes_of_a_running_cluster(fakes: FakeTools) -> None:
    fakes.add("dev", running=True)
    assert cluster_status(spec()) == ClusterStatus("dev", "running", 1, 1)


def test_cluster_status_of_a_cluster_the_provider_lacks_is_absent(fakes: FakeTools) -> None:
    assert cluster_status(spec(provider="kind")) == ClusterStatus("dev", "absent", 0, 0)


def test_cluster_status_is_unknown_when_the_provider_cannot_say(
    fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "list")
    assert cluster_status(spec()) == ClusterStatus("dev", "unknown", 0, 0)


def test_cluster_status_of_an_unknown_provider_is_unknown() -> None:
    assert cluster_status(spec(provider="minikube")) == ClusterStatus("dev", "unknown", 0, 0)


def test_k3d_server_ip_is_the_server_node_address(fakes: FakeTools) -> None:
    fakes.add("other")
    fakes.add("dev")
    assert K3dDriver().server_ip("dev") == "172.20.0.2"
    assert fakes.calls() == [["k3d", "cluster", "list", "-o", "json"]]


def test_k3d_server_ip_of_a_stopped_cluster_is_none(fakes: FakeTools) -> None:
    fakes.add("dev", running=False)
    assert K3dDriver().server_ip("dev") is None


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("[]", "k3d cluster list -o json does not list dev"),
        ('[{"name": "dev"}]', "k3d cluster list -o json printed no nodes for dev"),
        (
            '[{"name": "dev", "nodes": [{"role": "server", "IP": {"IP": "300.1.1.1"}}]}]',
            "'300.1.1.1' is not an IPv4 address",
        ),
    ],
)
def test_k3d_server_ip_from_output_k3d_never_prints_is_a_driver_error(
    monkeypatch: pytest.MonkeyPatch, output: str, message: str
) -> None:
    monkeypatch.setattr("clusters.drivers.k3d.capture", lambda argv: output)
    with pytest.raises(DriverError) as caught:
        K3dDriver().server_ip("dev")
    assert str(caught.value) == message


def test_kind_server_ip_is_the_control_plane_address_on_the_kind_network(
    fakes: FakeTools,
) -> None:
    fakes.add("dev", provider="kind")
    fakes.add("qa", provider="kind")
    assert KindDriver().server_ip("qa") == "172.18.0.3"
    assert fakes.calls() == [["docker", "inspect", "--type", "container", "qa-control-plane"]]


def test_kind_server_ip_of_a_stopped_node_is_none(fakes: FakeTools) -> None:
    fakes.add("dev", provider="kind", running=False)
    assert KindDriver().server_ip("dev") is None


def test_kind_server_ip_of_a_missing_container_is_a_driver_error(fakes: FakeTools) -> None:
    with pytest.raises(DriverError) as caught:
        KindDriver().server_ip("dev")
    assert str(caught.value) == (
        "docker inspect --type container dev-control-plane exited with status 1: "
        "Error: No such container: dev-control-plane"
    )


@pytest.mark.parametrize("output", ["", "[]", "[{}]", '[{"NetworkSettings": null}]', "{}"])
def test_kind_server_ip_from_output_docker_never_prints_is_a_driver_error(
    monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    monkeypatch.setattr("clusters.drivers.kind.capture", lambda argv: output)
    with pytest.raises(DriverError, match=r"^docker inspect printed something that is not one"):
        KindDriver().server_ip("dev")
