"""The admin for clusters and operations, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from clusters.models import Cluster, DesiredState
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


ACTION = "mark_for_deletion"


def test_the_cluster_changelist_lists_clusters(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.get("/admin/clusters/cluster/")
    assert response.status_code == 200
    assert [cluster.name for cluster in response.context["cl"].result_list] == ["dev"]


def test_the_cluster_changelist_filters_by_provider(alias: str, admin_client: Client) -> None:
    make_cluster(name="one", provider="kind")
    make_cluster(name="two", provider="k3d")
    response = admin_client.get("/admin/clusters/cluster/?provider__exact=kind")
    assert [cluster.name for cluster in response.context["cl"].result_list] == ["one"]


def test_the_cluster_changelist_searches_by_name(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    make_cluster(name="qa")
    response = admin_client.get("/admin/clusters/cluster/?q=qa")
    assert [cluster.name for cluster in response.context["cl"].result_list] == ["qa"]


def test_the_action_marks_clusters_for_deletion(alias: str, admin_client: Client) -> None:
    dev, qa = make_cluster(name="dev"), make_cluster(name="qa")
    admin_client.post(
        "/admin/clusters/cluster/",
        {"action": ACTION, "_selected_action": [dev.pk, qa.pk]},
    )
    assert sorted(Cluster.objects.values_list("name", "desired_state")) == [
        ("dev", DesiredState.ABSENT),
        ("qa", DesiredState.ABSENT),
    ]


def test_the_action_skips_devops(alias: str, admin_client: Client) -> None:
    devops = make_cluster(name="devops")
    response = admin_client.post(
        "/admin/clusters/cluster/",
        {"action": ACTION, "_selected_action": [devops.pk]},
        follow=True,
    )
    assert Cluster.objects.get(name="devops").desired_state == DesiredState.PRESENT
    assert [str(m) for m in response.context["messages"]] == [
        "The devops cluster cannot be deleted."
    ]


def test_bulk_delete_is_not_offered(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.get("/admin/clusters/cluster/")
    choices = [value for value, _ in response.context["action_form"].fields["action"].choices]
    assert choices == ["", ACTION]


def test_devops_has_no_delete_page(alias: str, admin_client: Client) -> None:
    devops = make_cluster(name="devops")
    response = admin_client.get(f"/admin/clusters/cluster/{devops.pk}/delete/")
    assert response.status_code == 403


def test_the_operation_changelist_filters_by_status(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    make_operation(cluster, status="failed")
    make_operation(cluster, status="success")
    response = admin_client.get("/admin/clusters/operationlog/?status__exact=failed")
    assert [op.status for op in response.context["cl"].result_list] == ["failed"]


def test_operation_output_is_read_only(alias: str, admin_client: Client) -> None:
    operation = make_operation(make_cluster(name="dev"), log_output="created")
    response = admin_client.get(f"/admin/clusters/operationlog/{operation.pk}/change/")
    assert response.status_code == 200
    assert "log_output" not in response.context["adminform"].form.fields


def test_operations_cannot_be_added_by_hand(alias: str, admin_client: Client) -> None:
    assert admin_client.get("/admin/clusters/operationlog/add/").status_code == 403
