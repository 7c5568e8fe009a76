"""Checks before a create (clusters/preflight.py), and their place in request_create."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from clusters import lifecycle, preflight
from clusters.models import Cluster
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster, make_registration
from tests.pgserver import free_port, free_ports

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture(params=["127.0.0.1", "0.0.0.0"])
def listening(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port this test listens on (loopback or every address), as another program would."""
    with socket.socket() as sock:
        sock.bind((request.param, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def errors(check: object, cluster: Cluster, **kwargs: object) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        check(cluster, **kwargs)  # type: ignore[operator]
    return caught.value.message_dict


def test_a_port_someone_listens_on_is_in_use(listening: int) -> None:
    assert preflight.port_in_use(listening) is True


def test_a_free_port_is_not_in_use() -> None:
    assert preflight.port_in_use(free_port()) is False


def test_create_preflight_names_the_port_in_use(alias: str, listening: int) -> None:
    cluster = Cluster(**cluster_fields(https_port=listening))
    assert errors(preflight.check_create, cluster, exists=False) == {
        "https_port": [f"port {listening} is in use by another process"]
    }


def test_the_ports_of_a_cluster_the_provider_has_are_not_bind_tested(
    alias: str, listening: int
) -> None:
    preflight.check_create(Cluster(**cluster_fields(http_port=listening)), exists=True)


def test_create_preflight_passes_with_free_ports(alias: str) -> None:
    http, https, pf = free_ports(3)
    fields = cluster_fields(http_port=http, https_port=https, pf_port=pf)
    preflight.check_create(Cluster(**fields), exists=False)


def test_an_overlapping_subnet_names_the_other_cluster(alias: str) -> None:
    make_cluster(name="uat", subnet="10.101.0.0/16")
    cluster = Cluster(**cluster_fields(subnet="10.101.128.0/17"))
    assert errors(preflight.check_request, cluster) == {
        "subnet": ["subnet 10.101.128.0/17 overlaps cluster uat"]
    }


def test_a_subnet_apart_from_the_others_passes(alias: str) -> None:
    make_cluster(name="uat", subnet="10.101.0.0/16")
    preflight.check_request(Cluster(**cluster_fields(subnet="10.102.0.0/16")))


def test_a_port_another_cluster_uses_is_named(alias: str) -> None:
    make_cluster(name="dev", http_port=18090, https_port=18453, pf_port=19001)
    cluster = Cluster(**cluster_fields(pf_port=18090))
    assert errors(preflight.check_create, cluster, exists=True) == {
        "pf_port": ["Port 18090 is already used by cluster dev."]
    }


def test_a_provider_the_hosts_live_reconciler_lacks_is_named(alias: str) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.7.4"})
    cluster = Cluster(**cluster_fields(provider="kind", host="docker-1"))
    assert errors(preflight.check_request, cluster) == {
        "provider": [
            "the reconciler on docker-1 has no kind on its PATH; install it: "
            "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
        ]
    }


def test_the_request_check_never_reads_this_processs_path(
    alias: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    make_registration(host="docker-1", providers={"kind": "v0.24.0"})
    preflight.check_request(Cluster(**cluster_fields(provider="kind", host="docker-1")))


def test_a_missing_binary_on_the_reconciler_is_named_with_its_install_page(
    alias: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    cluster = Cluster(**cluster_fields(provider="kind"))
    assert errors(preflight.check_create, cluster, exists=True) == {
        "provider": [
            "kind not found on PATH; install it: "
            "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
        ]
    }


def test_request_create_refuses_an_overlapping_subnet(alias: str) -> None:
    make_cluster(name="uat", subnet="10.101.0.0/16")
    with pytest.raises(ValidationError) as caught:
        lifecycle.request_create(**cluster_fields(name="qa", subnet="10.101.0.0/16"))
    assert caught.value.message_dict == {"subnet": ["subnet 10.101.0.0/16 overlaps cluster uat"]}
    assert not Cluster.objects.filter(name="qa").exists()


def test_request_create_refuses_a_provider_the_live_reconciler_lacks(alias: str) -> None:
    make_registration(host="docker-1", providers={"kind": "v0.24.0"})
    with pytest.raises(ValidationError) as caught:
        lifecycle.request_create(**cluster_fields(name="qa", host="docker-1"))
    assert caught.value.message_dict == {
        "provider": [
            "the reconciler on docker-1 has no k3d on its PATH; install it: "
            "https://k3d.io/#installation"
        ]
    }
    assert not Cluster.objects.filter(name="qa").exists()


def test_request_create_accepts_any_provider_while_no_reconciler_is_live(
    alias: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    make_registration(host="docker-1", providers={}, seconds_ago=3600)
    cluster, _ = lifecycle.request_create(**cluster_fields(name="qa", host="docker-1"))
    assert (cluster.host, cluster.provider) == ("docker-1", "k3d")


def test_request_create_does_not_bind_test(alias: str, listening: int) -> None:
    cluster, _ = lifecycle.request_create(**cluster_fields(http_port=listening))
    assert cluster.http_port == listening


def test_describe_puts_a_failure_on_one_line() -> None:
    error = ValidationError({"http_port": ["port 1 is in use"], "subnet": ["overlaps"]})
    assert preflight.failure_message(error) == (
        "Preflight failed: http_port: port 1 is in use; subnet: overlaps"
    )
