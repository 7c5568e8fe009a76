"""Dashboard forms: model validation surfaced per field, delete confirmation, filters."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.forms import ClusterEditForm, ClusterFilterForm, ClusterForm, DeleteConfirmForm
from clusters.models import Cluster
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


def data(**overrides: Any) -> dict[str, Any]:
    return {"node_port": 30080, **cluster_fields(**overrides)}


def errors_of(**overrides: Any) -> dict[str, list[str]]:
    form = ClusterForm(data(**overrides))
    assert not form.is_valid()
    return {field: [str(m) for m in messages] for field, messages in form.errors.items()}


def test_a_valid_cluster_passes(alias: str) -> None:
    assert ClusterForm(data()).is_valid()


def test_a_missing_name_is_required(alias: str) -> None:
    assert errors_of(name="") == {"name": ["This field is required."]}


def test_a_name_that_is_not_a_dns_label_is_explained(alias: str) -> None:
    assert errors_of(name="Dev_1") == {
        "name": [
            "Use lower-case letters, digits and dashes, starting and ending with a letter or "
            "digit (a DNS-1123 label), e.g. dev-1."
        ]
    }


def test_a_duplicate_name_is_explained(alias: str) -> None:
    make_cluster(name="dev")
    assert errors_of(name="dev") == {"name": ["A cluster named dev already exists."]}


def test_a_port_used_by_another_cluster_names_it(alias: str) -> None:
    make_cluster(name="dev", https_port=18090)
    assert errors_of(http_port=18090) == {
        "http_port": ["Port 18090 is already used by cluster dev."]
    }


def test_a_port_used_twice_in_one_cluster_is_explained(alias: str) -> None:
    assert errors_of(http_port=18095, pf_port=18095) == {
        "pf_port": ["Port 18095 is already used by this cluster's http_port."]
    }


@pytest.mark.parametrize("port", [1023, 65536, 99999999999999999999, -99999999999999999999])
def test_ports_outside_the_range_are_explained(alias: str, port: int) -> None:
    assert errors_of(https_port=port) == {"https_port": ["Ports must be between 1024 and 65535."]}


def test_a_bad_cidr_is_explained(alias: str) -> None:
    assert errors_of(subnet="10.0.0.1/16") == {
        "subnet": [
            "10.0.0.1/16 is not a valid IPv4 CIDR such as 10.100.0.0/16 "
            "(10.0.0.1/16 has host bits set)."
        ]
    }


def test_an_ipv6_subnet_is_explained(alias: str) -> None:
    assert errors_of(subnet="fd00::/64") == {
        "subnet": ["fd00::/64 is an IPv6 network; use an IPv4 CIDR such as 10.100.0.0/16."]
    }


def test_a_subnet_for_kind_is_explained(alias: str) -> None:
    assert errors_of(provider="kind", subnet="10.101.0.0/16") == {
        "subnet": ["A subnet can only be set for k3d clusters; kind assigns its own."]
    }


def test_an_unknown_provider_is_refused(alias: str) -> None:
    assert errors_of(provider="minikube") == {
        "provider": ["Select a valid choice. minikube is not one of the available choices."]
    }


def test_a_bad_server_ip_is_refused(alias: str) -> None:
    assert errors_of(server_ip="10.0.0") == {"server_ip": ["Enter a valid IPv4 address."]}


def test_the_edit_form_has_no_name_provider_or_host_field() -> None:
    assert {"name", "provider", "host"} & set(ClusterEditForm().fields) == set()


def test_the_edit_form_does_not_clash_with_the_cluster_itself(alias: str) -> None:
    cluster = make_cluster(name="dev")
    fields = data(http_port=cluster.http_port, https_port=cluster.https_port)
    fields["pf_port"] = cluster.pf_port
    assert ClusterEditForm(fields, instance=cluster).is_valid()


def test_delete_confirmation_accepts_the_exact_name() -> None:
    assert DeleteConfirmForm(Cluster(name="dev"), {"confirm_name": "dev"}).is_valid()


def test_delete_confirmation_refuses_another_name() -> None:
    form = DeleteConfirmForm(Cluster(name="dev"), {"confirm_name": "Dev"})
    assert form.errors == {"confirm_name": ["Type dev exactly to confirm the deletion."]}


def test_delete_confirmation_requires_a_name() -> None:
    form = DeleteConfirmForm(Cluster(name="dev"), {"confirm_name": ""})
    assert form.errors == {"confirm_name": ["This field is required."]}


def test_filters_ignore_an_unknown_state(alias: str) -> None:
    make_cluster(name="dev")
    form = ClusterFilterForm({"state": "bogus"})
    assert list(form.filter(Cluster.objects.all()).values_list("name", flat=True)) == ["dev"]


def test_filters_combine(alias: str) -> None:
    make_cluster(name="dev-a", provider="kind", actual_state="running")
    make_cluster(name="dev-b", provider="k3d", actual_state="running")
    make_cluster(name="qa", provider="kind", actual_state="running")
    form = ClusterFilterForm({"q": "dev", "provider": "kind", "state": "running"})
    assert list(form.filter(Cluster.objects.all()).values_list("name", flat=True)) == ["dev-a"]


def test_a_name_longer_than_63_characters_is_explained(alias: str) -> None:
    assert errors_of(name="a" * 64) == {
        "name": ["Cluster names are at most 63 characters (this one has 64)."]
    }
