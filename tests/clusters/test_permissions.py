"""Roles: what Viewers, Operators, people without a role and superusers may do."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from clusters import permissions
from clusters.models import Cluster, DesiredState
from tests.conftest import BOTH
from tests.factories import make_cluster, make_superuser, make_user

pytestmark = [pytest.mark.django_db(databases=BOTH), pytest.mark.usefixtures("roles")]

TOKEN = "t" * 40
# Action -> (method, API path, body) on a cluster named dev.
API_CALLS: dict[str, tuple[str, str, Any]] = {
    "create": ("post", "/api/clusters", {"name": "qa"}),
    "edit": ("patch", "/api/clusters/dev", {"register_argocd": False}),
    "delete": ("delete", "/api/clusters/dev", None),
    "start": ("post", "/api/clusters/dev/start", None),
    "stop": ("post", "/api/clusters/dev/stop", None),
}
API_ALLOWED = {"create": 202, "edit": 200, "delete": 202, "start": 202, "stop": 202}
# Action -> (page, what a successful submission posts).
PAGES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "create": (
        "/new/",
        {
            "name": "qa",
            "provider": "k3d",
            "node_port": 30080,
            "pf_port": 19100,
            "http_port": 18100,
            "https_port": 18500,
        },
    ),
    "edit": (
        "/clusters/dev/edit/",
        {
            "provider": "k3d",
            "node_port": 30080,
            "pf_port": 19000,
            "http_port": 18080,
            "https_port": 18443,
        },
    ),
    "delete": ("/clusters/dev/delete/", {"confirm_name": "dev"}),
    "start": ("/clusters/dev/start/", None),
    "stop": ("/clusters/dev/stop/", None),
}
ACTIONS = list(API_CALLS)
DENIED = {
    "create": "You do not have permission to create clusters.",
    "edit": "You do not have permission to edit clusters.",
    "delete": "You do not have permission to delete clusters.",
    "start": "You do not have permission to start clusters.",
    "stop": "You do not have permission to stop clusters.",
}


@pytest.fixture
def dev(alias: str) -> Cluster:
    return make_cluster(
        name="dev",
        desired_state=DesiredState.STOPPED,
        http_port=18080,
        https_port=18443,
        pf_port=19000,
    )


def signed_in(*groups: str) -> Client:
    client = Client()
    client.force_login(make_user("someone", *groups))
    return client


def call_api(client: Client, action: str, **headers: str) -> Any:
    method, path, body = API_CALLS[action]
    data = json.dumps(body) if body is not None else ""
    return getattr(client, method)(path, data, content_type="application/json", headers=headers)


def test_the_migration_gives_each_role_its_permissions(alias: str) -> None:
    granted = {
        group.name: sorted(
            f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()
        )
        for group in Group.objects.all()
    }
    assert granted == {
        "Operators": [
            "clusters.add_cluster",
            "clusters.change_cluster",
            "clusters.delete_cluster",
            "clusters.operate_cluster",
            "clusters.view_cluster",
            "clusters.view_operationlog",
            "kindler_db.change_conflict",
            "kindler_db.view_conflict",
        ],
        "Viewers": [
            "clusters.view_cluster",
            "clusters.view_operationlog",
            "kindler_db.view_conflict",
        ],
    }


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("groups", [(), ("Viewers",)], ids=["no-role", "viewer"])
def test_the_api_refuses_an_action_without_its_permission(
    dev: Cluster, action: str, groups: tuple[str, ...]
) -> None:
    before = Cluster.objects.get(name="dev")
    response = call_api(signed_in(*groups), action)
    assert (response.status_code, response.json()) == (403, {"detail": DENIED[action]})
    after = Cluster.objects.get(name="dev")
    assert (Cluster.objects.count(), after.version) == (1, before.version)


@pytest.mark.parametrize("action", ACTIONS)
def test_the_api_lets_an_operator_act(dev: Cluster, action: str) -> None:
    response = call_api(signed_in("Operators"), action)
    assert response.status_code == API_ALLOWED[action]


@pytest.mark.parametrize("action", ACTIONS)
def test_the_api_lets_a_superuser_act(dev: Cluster, action: str) -> None:
    client = Client()
    client.force_login(make_superuser())
    assert call_api(client, action).status_code == API_ALLOWED[action]


@pytest.mark.parametrize("action", ACTIONS)
def test_the_api_token_acts_as_an_operator(dev: Cluster, action: str, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    response = call_api(Client(), action, Authorization=f"Bearer {TOKEN}")
    assert response.status_code == API_ALLOWED[action]


@pytest.mark.parametrize("groups", [(), ("Viewers",)], ids=["no-role", "viewer"])
def test_the_api_lets_anyone_signed_in_read(dev: Cluster, groups: tuple[str, ...]) -> None:
    client = signed_in(*groups)
    response = client.get("/api/clusters/dev")
    assert (response.status_code, response.json()["name"]) == (200, "dev")


@pytest.mark.parametrize("action", ["create", "edit", "delete"])
@pytest.mark.parametrize("groups", [(), ("Viewers",)], ids=["no-role", "viewer"])
def test_a_form_page_is_403_without_the_permission(
    dev: Cluster, action: str, groups: tuple[str, ...]
) -> None:
    response = signed_in(*groups).get(PAGES[action][0])
    assert response.status_code == 403
    assert f"<p>{DENIED[action]} Ask an administrator if you need it.</p>" in response.text


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("groups", [(), ("Viewers",)], ids=["no-role", "viewer"])
def test_a_dashboard_submission_is_403_without_the_permission(
    dev: Cluster, action: str, groups: tuple[str, ...]
) -> None:
    before = Cluster.objects.get(name="dev")
    page, data = PAGES[action]
    response = signed_in(*groups).post(page, data or {})
    assert response.status_code == 403
    assert f"<p>{DENIED[action]} Ask an administrator if you need it.</p>" in response.text
    after = Cluster.objects.get(name="dev")
    assert (Cluster.objects.count(), after.version) == (1, before.version)


@pytest.mark.parametrize("action", ACTIONS)
def test_an_operator_submits_every_dashboard_action(dev: Cluster, action: str) -> None:
    page, data = PAGES[action]
    response = signed_in("Operators").post(page, data or {})
    expected = "/clusters/qa/" if action == "create" else "/clusters/dev/"
    assert (response.status_code, response["Location"]) == (302, expected)


@pytest.mark.parametrize("action", ACTIONS)
def test_a_superuser_submits_every_dashboard_action(dev: Cluster, action: str) -> None:
    client = Client()
    client.force_login(make_superuser())
    page, data = PAGES[action]
    response = client.post(page, data or {})
    expected = "/clusters/qa/" if action == "create" else "/clusters/dev/"
    assert (response.status_code, response["Location"]) == (302, expected)


BUTTONS = {
    "create": 'href="/new/"',
    "edit": 'href="/clusters/dev/edit/"',
    "delete": 'href="/clusters/dev/delete/"',
    "start": 'action="/clusters/dev/start/"',
}


def shown_buttons(client: Client) -> list[str]:
    page = client.get("/").text + client.get("/clusters/dev/").text
    return [action for action, html in BUTTONS.items() if html in page]


def test_a_viewer_sees_no_button_to_change_anything(dev: Cluster) -> None:
    assert shown_buttons(signed_in("Viewers")) == []


def test_a_person_without_a_role_sees_no_button_to_change_anything(dev: Cluster) -> None:
    assert shown_buttons(signed_in()) == []


def test_an_operator_sees_every_button(dev: Cluster) -> None:
    assert shown_buttons(signed_in("Operators")) == ["create", "edit", "delete", "start"]


def test_an_operator_without_edit_sees_only_what_it_may_use(dev: Cluster) -> None:
    user = make_user("starter", "Viewers")
    grant = User.user_permissions.through
    grant.objects.bulk_create(
        [grant(user=user, permission=Permission.objects.get(codename="operate_cluster"))]
    )
    client = Client()
    client.force_login(user)
    assert shown_buttons(client) == ["start"]


def test_the_refusal_names_the_action() -> None:
    assert permissions.refusal("stop") == "You do not have permission to stop clusters."


def staff_in(*groups: str) -> Client:
    client = Client()
    user = make_user("staff", *groups)
    type(user).objects.filter(pk=user.pk).update(is_staff=True)
    client.force_login(user)
    return client


def test_a_staff_viewer_reads_the_admin_list_without_actions(dev: Cluster) -> None:
    response = staff_in("Viewers").get("/admin/clusters/cluster/")
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [dev]
    assert (response.context["has_add_permission"], response.context["action_form"]) == (
        False,
        None,
    )


def test_a_staff_viewer_cannot_open_the_admin_add_page(dev: Cluster) -> None:
    assert staff_in("Viewers").get("/admin/clusters/cluster/add/").status_code == 403


def test_a_staff_operator_can_mark_clusters_for_deletion_in_the_admin(dev: Cluster) -> None:
    response = staff_in("Operators").post(
        "/admin/clusters/cluster/",
        {"action": "mark_for_deletion", "_selected_action": [str(dev.pk)]},
    )
    assert response.status_code == 302
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.ABSENT


def test_the_admin_lists_the_roles(alias: str) -> None:
    client = Client()
    client.force_login(make_superuser())
    response = client.get("/admin/auth/group/")
    assert [str(group) for group in response.context["cl"].result_list] == [
        "Operators",
        "Viewers",
    ]


def test_a_staff_viewer_sees_conflicts_without_the_actions_to_resolve_them(alias: str) -> None:
    response = staff_in("Viewers").get("/admin/kindler_db/conflict/")
    assert (response.status_code, response.context["action_form"]) == (200, None)


def test_a_staff_operator_gets_the_actions_to_resolve_conflicts(alias: str) -> None:
    response = staff_in("Operators").get("/admin/kindler_db/conflict/")
    choices = [value for value, _ in response.context["action_form"].fields["action"].choices]
    assert (response.status_code, choices) == (200, ["", "keep_remote", "apply_local"])
