from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from clusters.models import Cluster, ClusterProtectedError, free_host_ports
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


def errors_of(**overrides: object) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        Cluster(**cluster_fields(**overrides)).full_clean()
    return caught.value.message_dict


def test_a_valid_cluster_passes(alias: str) -> None:
    Cluster(**cluster_fields()).full_clean()


@pytest.mark.parametrize("name", ["dev", "a", "dev-1", "1dev", "a" * 63])
def test_dns_labels_are_accepted(alias: str, name: str) -> None:
    Cluster(**cluster_fields(name=name)).full_clean()


@pytest.mark.parametrize(
    "name", ["Dev", "-dev", "dev-", "dev_1", "dev.example", "dév", "nl\n", "\ndev"]
)
def test_names_that_are_not_dns_labels_are_refused(alias: str, name: str) -> None:
    assert errors_of(name=name) == {
        "name": [
            "Use lower-case letters, digits and dashes, starting and ending with a letter or "
            "digit (a DNS-1123 label), e.g. dev-1."
        ]
    }


def test_names_longer_than_63_characters_are_refused(alias: str) -> None:
    assert errors_of(name="a" * 64)["name"] == [
        "Cluster names are at most 63 characters (this one has 64).",
        "Ensure this value has at most 63 characters (it has 64).",
    ]


def test_an_unknown_provider_is_refused(alias: str) -> None:
    assert errors_of(provider="minikube") == {
        "provider": ["Value 'minikube' is not a valid choice."]
    }


@pytest.mark.parametrize("field", ["node_port", "pf_port", "http_port", "https_port"])
@pytest.mark.parametrize("port", [1023, 65536])
def test_ports_outside_1024_to_65535_are_refused(alias: str, field: str, port: int) -> None:
    assert errors_of(**{field: port})[field] == ["Ports must be between 1024 and 65535."]


@pytest.mark.parametrize("port", [1024, 65535])
def test_ports_at_the_range_edges_are_accepted(alias: str, port: int) -> None:
    Cluster(**cluster_fields(node_port=port)).full_clean()


def test_a_valid_subnet_is_accepted_for_k3d(alias: str) -> None:
    Cluster(**cluster_fields(subnet="10.100.0.0/16")).full_clean()


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        (
            "10.100.0.0/33",
            "10.100.0.0/33 is not a valid IPv4 CIDR such as 10.100.0.0/16 "
            "(10.100.0.0/33 does not appear to be an IPv4 or IPv6 network).",
        ),
        (
            "10.100.0.1/16",
            "10.100.0.1/16 is not a valid IPv4 CIDR such as 10.100.0.0/16 "
            "(10.100.0.1/16 has host bits set).",
        ),
        ("fd00::/64", "fd00::/64 is an IPv6 network; use an IPv4 CIDR such as 10.100.0.0/16."),
        ("10.2.0.0", "10.2.0.0 has no prefix length; write a network such as 10.2.0.0/16."),
        (
            "10.0.0.0/255.0.0.0",
            "10.0.0.0/255.0.0.0 is not in CIDR notation; write it as 10.0.0.0/8.",
        ),
        ("10.0.0.0/08", "10.0.0.0/08 is not in CIDR notation; write it as 10.0.0.0/8."),
    ],
)
def test_invalid_subnets_are_refused(alias: str, subnet: str, message: str) -> None:
    assert errors_of(subnet=subnet) == {"subnet": [message]}


def test_a_subnet_is_refused_for_kind(alias: str) -> None:
    assert errors_of(provider="kind", subnet="10.100.0.0/16") == {
        "subnet": ["A subnet can only be set for k3d clusters; kind assigns its own."]
    }


def test_a_duplicate_name_is_refused(alias: str) -> None:
    make_cluster(name="dev")
    assert errors_of(name="dev") == {"name": ["A cluster named dev already exists."]}


@pytest.mark.parametrize("field", ["http_port", "https_port", "pf_port"])
def test_a_host_port_used_by_another_cluster_is_refused(alias: str, field: str) -> None:
    make_cluster(name="dev", http_port=18090, https_port=18453, pf_port=19001)
    taken = {"http_port": 18090, "https_port": 18453, "pf_port": 19001}[field]
    assert errors_of(**{field: taken})[field] == [f"Port {taken} is already used by cluster dev."]


def test_a_host_port_is_refused_when_another_cluster_uses_it_for_another_role(alias: str) -> None:
    make_cluster(name="dev", http_port=18090)
    assert errors_of(https_port=18090) == {
        "https_port": ["Port 18090 is already used by cluster dev."]
    }


def test_one_cluster_cannot_use_a_port_twice(alias: str) -> None:
    assert errors_of(http_port=18090, https_port=18090) == {
        "https_port": ["Port 18090 is already used by this cluster's http_port."]
    }


def test_node_port_may_repeat_across_clusters(alias: str) -> None:
    make_cluster(node_port=30080)
    Cluster(**cluster_fields(node_port=30080)).full_clean()


def test_saving_a_cluster_again_does_not_conflict_with_itself(alias: str) -> None:
    cluster = make_cluster()
    cluster.full_clean()


def test_devops_cannot_be_deleted(alias: str) -> None:
    devops = make_cluster(name="devops")
    with pytest.raises(ClusterProtectedError, match=r"The devops cluster cannot be deleted\."):
        devops.delete()
    assert Cluster.objects.filter(name="devops").count() == 1


def test_devops_cannot_be_deleted_in_bulk(alias: str) -> None:
    make_cluster(name="devops")
    make_cluster(name="dev")
    with pytest.raises(ClusterProtectedError):
        Cluster.objects.all().delete()
    assert Cluster.objects.count() == 2


def test_other_clusters_can_be_deleted(alias: str) -> None:
    make_cluster(name="dev").delete()
    assert Cluster.objects.filter(name="dev").exists() is False


def test_every_save_bumps_the_version(alias: str) -> None:
    cluster = make_cluster()
    cluster.save()
    cluster.refresh_from_db()
    assert cluster.version == 2


def test_queryset_update_bumps_the_version(alias: str) -> None:
    cluster = make_cluster()
    Cluster.objects.filter(pk=cluster.pk).update(actual_state="running")
    cluster.refresh_from_db()
    assert (cluster.actual_state, cluster.version) == ("running", 2)


def test_a_stale_copy_still_saves_a_newer_version(alias: str) -> None:
    first = make_cluster()
    second = Cluster.objects.get(pk=first.pk)
    first.save()
    second.save(update_fields=["desired_state"])
    assert (first.version, second.version) == (2, 3)
    assert Cluster.objects.get(pk=first.pk).version == 3


def test_free_host_ports_start_at_the_defaults_on_an_empty_inventory(alias: str) -> None:
    assert free_host_ports() == {"http_port": 18080, "https_port": 18443, "pf_port": 19000}


def test_free_host_ports_skip_ports_any_cluster_uses_in_any_role(alias: str) -> None:
    make_cluster(name="dev", http_port=18443, https_port=18080, pf_port=18081)
    assert free_host_ports() == {"http_port": 18082, "https_port": 18444, "pf_port": 19000}


def test_host_ports_are_exclusive_across_every_cluster_for_the_sync_layer() -> None:
    assert Cluster.exclusive_fields == ("http_port", "https_port", "pf_port")
