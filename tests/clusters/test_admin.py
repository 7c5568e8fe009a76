"""The admin for clusters and operations, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from clusters.models import Cluster, DesiredState, OperationLog
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation, make_superuser, make_user

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
    assert choices == ["", ACTION, "start_clusters", "stop_clusters"]


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_delete_page_asks_to_mark_for_deletion(alias: str, admin_client: Client) -> None:
    dev = make_cluster(name="dev")
    response = admin_client.get(f"/admin/clusters/cluster/{dev.pk}/delete/")
    assert (response.status_code, response.context["title"]) == (200, "Mark dev for deletion")
    assert messages_of(response) == [
        "Confirming marks dev for deletion: the reconciler deletes the k3d cluster, then this "
        "row. Its operation history is kept."
    ]


def test_showing_the_delete_page_changes_nothing(alias: str, admin_client: Client) -> None:
    dev = make_cluster(name="dev")
    admin_client.get(f"/admin/clusters/cluster/{dev.pk}/delete/")
    assert list(Cluster.objects.values_list("name", "desired_state")) == [
        ("dev", DesiredState.PRESENT)
    ]
    assert OperationLog.objects.count() == 0


def test_confirming_the_delete_page_marks_the_cluster(alias: str, admin_client: Client) -> None:
    dev = make_cluster(name="dev")
    response = admin_client.post(f"/admin/clusters/cluster/{dev.pk}/delete/", {"post": "yes"})
    assert (response.status_code, response["Location"]) == (302, "/admin/clusters/cluster/")
    assert list(Cluster.objects.values_list("name", "desired_state")) == [
        ("dev", DesiredState.ABSENT)
    ]


def test_confirming_the_delete_page_queues_the_deletion(alias: str, admin_client: Client) -> None:
    dev = make_cluster(name="dev")
    admin_client.post(f"/admin/clusters/cluster/{dev.pk}/delete/", {"post": "yes"})
    assert list(OperationLog.objects.values_list("cluster_name", "operation", "status")) == [
        ("dev", "delete", "pending")
    ]


def test_confirming_the_delete_page_says_what_happens(alias: str, admin_client: Client) -> None:
    dev = make_cluster(name="dev")
    response = admin_client.post(
        f"/admin/clusters/cluster/{dev.pk}/delete/", {"post": "yes"}, follow=True
    )
    assert messages_of(response) == ["Marked dev for deletion; the reconciler deletes it."]


def test_confirming_the_delete_page_is_kept_in_the_history(
    alias: str, admin_client: Client
) -> None:
    dev = make_cluster(name="dev")
    admin_client.post(f"/admin/clusters/cluster/{dev.pk}/delete/", {"post": "yes"})
    entry = LogEntry.objects.get()
    assert (entry.object_repr, entry.is_change(), entry.get_change_message()) == (
        "dev",
        True,
        "Marked for deletion.",
    )


def test_a_cluster_marked_already_is_not_queued_twice(alias: str, admin_client: Client) -> None:
    dev = make_cluster(name="dev", desired_state=DesiredState.ABSENT)
    response = admin_client.post(
        f"/admin/clusters/cluster/{dev.pk}/delete/", {"post": "yes"}, follow=True
    )
    assert response.redirect_chain == [(f"/admin/clusters/cluster/{dev.pk}/change/", 302)]
    assert messages_of(response) == [
        "dev is already marked for deletion; the reconciler deletes it."
    ]
    assert OperationLog.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "post"])
def test_the_devops_delete_page_refuses_with_a_message(
    alias: str, admin_client: Client, method: str
) -> None:
    devops = make_cluster(name="devops")
    response = getattr(admin_client, method)(
        f"/admin/clusters/cluster/{devops.pk}/delete/", {"post": "yes"}, follow=True
    )
    assert response.redirect_chain == [(f"/admin/clusters/cluster/{devops.pk}/change/", 302)]
    assert messages_of(response) == ["The devops cluster cannot be deleted."]


def test_the_devops_delete_page_changes_nothing(alias: str, admin_client: Client) -> None:
    devops = make_cluster(name="devops")
    admin_client.post(f"/admin/clusters/cluster/{devops.pk}/delete/", {"post": "yes"})
    assert list(Cluster.objects.values_list("name", "desired_state")) == [
        ("devops", DesiredState.PRESENT)
    ]
    assert OperationLog.objects.count() == 0


def test_devops_change_page_offers_no_delete_link(alias: str, admin_client: Client) -> None:
    devops = make_cluster(name="devops")
    response = admin_client.get(f"/admin/clusters/cluster/{devops.pk}/change/")
    assert response.context["has_delete_permission"] is False


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


def test_operations_cannot_be_changed(alias: str, admin_client: Client) -> None:
    operation = make_operation(make_cluster(name="dev"), status="failed")
    response = admin_client.post(
        f"/admin/clusters/operationlog/{operation.pk}/change/",
        {"cluster_name": "dev", "operation": "create", "status": "success"},
    )
    assert response.status_code == 403
    assert list(OperationLog.objects.values_list("status", flat=True)) == ["failed"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_operations_cannot_be_deleted(alias: str, admin_client: Client, method: str) -> None:
    operation = make_operation(make_cluster(name="dev"))
    response = getattr(admin_client, method)(
        f"/admin/clusters/operationlog/{operation.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403
    assert OperationLog.objects.count() == 1


def test_operations_offer_no_bulk_delete(alias: str, admin_client: Client) -> None:
    make_operation(make_cluster(name="dev"))
    response = admin_client.get("/admin/clusters/operationlog/")
    assert response.context["action_form"] is None


def test_an_operation_can_be_viewed(alias: str, admin_client: Client) -> None:
    operation = make_operation(make_cluster(name="dev"), log_output="created")
    response = admin_client.get(f"/admin/clusters/operationlog/{operation.pk}/change/")
    assert (response.status_code, response.context["title"]) == (200, "View operation log")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (
            "created_at__year=99999999999999999999",
            "The year must be a whole number from 1 to 9998.",
        ),
        ("created_at__year=9999", "The year must be a whole number from 1 to 9998."),
        ("created_at__year=-1", "The year must be a whole number from 1 to 9998."),
        (
            "created_at__year=2024&created_at__month=99999999999999999999",
            "The month must be a whole number from 1 to 12.",
        ),
        (
            "created_at__year=2024&created_at__month=2&created_at__day=31",
            "The day is not in that month.",
        ),
    ],
)
def test_an_impossible_date_in_the_operation_filter_is_400(
    alias: str, admin_client: Client, query: str, reason: str
) -> None:
    response = admin_client.get(f"/admin/clusters/operationlog/?{query}")
    assert response.status_code == 400
    assert reason in response.content.decode()


def test_a_real_date_in_the_operation_filter_lists_that_day(
    alias: str, admin_client: Client
) -> None:
    make_operation(make_cluster(name="dev"))
    response = admin_client.get(
        "/admin/clusters/operationlog/?created_at__year=2024&created_at__month=2&created_at__day=29"
    )
    assert response.status_code == 200
    assert "0 operation logs" in response.content.decode()


@pytest.mark.parametrize("port", ["99999999999999999999", "-99999999999999999999"])
def test_the_add_page_refuses_a_port_out_of_range_with_422(
    alias: str, admin_client: Client, port: str
) -> None:
    data = {
        "name": "dev",
        "provider": "k3d",
        "node_port": "30080",
        "pf_port": "19000",
        "http_port": port,
        "https_port": "18443",
        "subnet": "",
        "desired_state": "present",
        "register_portainer": "on",
    }
    response = admin_client.post("/admin/clusters/cluster/add/", data)
    assert response.status_code == 422
    assert response.context["adminform"].form.errors["http_port"] == [
        "Ports must be between 1024 and 65535."
    ]
    assert Cluster.objects.exists() is False


def make_staff(*permissions: str) -> Any:
    """Save and return a staff user holding only the named cluster permissions."""
    from django.contrib.auth.models import Permission, User

    user = make_user("staff")
    User.objects.filter(pk=user.pk).update(is_staff=True)
    User.user_permissions.through.objects.bulk_create(
        [
            User.user_permissions.through(user_id=user.pk, permission=permission)
            for permission in Permission.objects.filter(
                content_type__app_label="clusters", codename__in=permissions
            )
        ]
    )
    return User.objects.get(pk=user.pk)


def change_data(cluster: Cluster, **changes: str) -> dict[str, str]:
    data = {
        "name": cluster.name,
        "provider": cluster.provider,
        "host": cluster.host,
        "node_port": str(cluster.node_port),
        "pf_port": str(cluster.pf_port),
        "http_port": str(cluster.http_port),
        "https_port": str(cluster.https_port),
        "subnet": "",
        "desired_state": cluster.desired_state,
        "register_portainer": "on",
    }
    return {**data, **changes}


@pytest.mark.parametrize("state", ["stopped", "absent"])
def test_the_change_form_never_changes_the_desired_state(
    alias: str, client: Client, state: str
) -> None:
    cluster = make_cluster(name="dev")
    client.force_login(make_staff("view_cluster", "change_cluster"))
    response = client.post(
        f"/admin/clusters/cluster/{cluster.pk}/change/", change_data(cluster, desired_state=state)
    )
    assert response.status_code == 302
    assert Cluster.objects.get().desired_state == DesiredState.PRESENT


def test_the_change_form_never_changes_the_name_the_provider_or_the_host(
    alias: str, admin_client: Client
) -> None:
    cluster = make_cluster(name="devops", provider="k3d", host="docker-1")
    changed = change_data(cluster, name="renamed", provider="kind", host="docker-2")
    response = admin_client.post(f"/admin/clusters/cluster/{cluster.pk}/change/", changed)
    assert response.status_code == 302
    assert list(Cluster.objects.values_list("name", "provider", "host")) == [
        ("devops", "k3d", "docker-1")
    ]


def test_state_actions_are_not_offered_without_their_permission(alias: str, client: Client) -> None:
    make_cluster(name="dev")
    client.force_login(make_staff("view_cluster", "change_cluster"))
    response = client.get("/admin/clusters/cluster/")
    # Without any action it may take, the page shows no action form at all.
    assert response.context["action_form"] is None


@pytest.mark.parametrize("action", ["stop_clusters", "start_clusters", ACTION])
def test_state_actions_change_nothing_without_their_permission(
    alias: str, client: Client, action: str
) -> None:
    running = make_cluster(name="dev")
    stopped = make_cluster(name="qa", desired_state=DesiredState.STOPPED)
    client.force_login(make_staff("view_cluster", "change_cluster"))
    client.post(
        "/admin/clusters/cluster/", {"action": action, "_selected_action": [running.pk, stopped.pk]}
    )
    assert sorted(Cluster.objects.values_list("name", "desired_state")) == [
        ("dev", DesiredState.PRESENT),
        ("qa", DesiredState.STOPPED),
    ]


def test_an_operator_stops_and_starts_clusters_with_the_actions(alias: str, client: Client) -> None:
    running = make_cluster(name="dev")
    stopped = make_cluster(name="qa", desired_state=DesiredState.STOPPED)
    client.force_login(make_staff("view_cluster", "change_cluster", "operate_cluster"))
    selected = [running.pk, stopped.pk]
    client.post(
        "/admin/clusters/cluster/", {"action": "stop_clusters", "_selected_action": selected}
    )
    after_stop = sorted(Cluster.objects.values_list("name", "desired_state"))
    client.post(
        "/admin/clusters/cluster/", {"action": "start_clusters", "_selected_action": selected}
    )
    after_start = sorted(Cluster.objects.values_list("name", "desired_state"))
    operations = sorted(OperationLog.objects.values_list("cluster_name", "operation"))
    assert (after_stop, after_start, operations) == (
        [("dev", DesiredState.STOPPED), ("qa", DesiredState.STOPPED)],
        [("dev", DesiredState.PRESENT), ("qa", DesiredState.PRESENT)],
        [("dev", "start"), ("dev", "stop"), ("qa", "start")],
    )


def test_the_add_page_past_kindler_max_clusters_is_422(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_MAX_CLUSTERS = 1
    make_cluster(name="one")
    data = {
        "name": "dev",
        "provider": "k3d",
        "node_port": "30080",
        "pf_port": "19000",
        "http_port": "18080",
        "https_port": "18443",
        "subnet": "",
    }
    response = admin_client.post("/admin/clusters/cluster/add/", data)
    assert response.status_code == 422
    assert response.context["adminform"].form.non_field_errors() == [
        "Kindler holds its most clusters (1, KINDLER_MAX_CLUSTERS): delete one before creating "
        "another."
    ]
    assert Cluster.objects.filter(name="dev").exists() is False


def test_the_add_page_past_a_persons_quota_is_422(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_MAX_CLUSTERS_PER_USER = 1
    make_cluster(name="one", created_by="admin")
    data = {
        "name": "dev",
        "provider": "k3d",
        "node_port": "30080",
        "pf_port": "19000",
        "http_port": "18080",
        "https_port": "18443",
        "subnet": "",
    }
    response = admin_client.post("/admin/clusters/cluster/add/", data)
    assert response.status_code == 422
    assert response.context["adminform"].form.non_field_errors() == [
        "admin holds their most clusters (1, KINDLER_MAX_CLUSTERS_PER_USER): delete one of "
        "theirs before creating another."
    ]
