"""The conflict admin: both sides side by side, and the two decisions."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from kindler.db.failover.monitor import State
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import Conflict
from kindler.db.sync.replay import replay
from tests.conftest import BOTH, wait_for_state
from tests.db.sync.syncing import local_change, on_postgres, remote_change, shared_cluster
from tests.factories import make_superuser
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def admin_user(db: None) -> Any:
    return make_superuser()


@pytest.fixture
def conflict() -> Conflict:
    """An update/update conflict on cluster dev: stopped here, absent and port 28080 there."""
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    # The same field changed on both sides: different fields would merge.
    remote_change("dev", desired_state="absent", http_port=28080)
    replay()
    return Conflict.objects.using("postgres").get()


@pytest.mark.postgres
def test_the_changelist_lists_open_conflicts(admin_client: Client, conflict: Conflict) -> None:
    response = admin_client.get("/admin/kindler_db/conflict/")
    assert [c.uid for c in response.context["cl"].result_list] == [conflict.uid]


@pytest.mark.postgres
def test_the_change_page_shows_the_fields_side_by_side(
    admin_client: Client, conflict: Conflict
) -> None:
    response = admin_client.get(f"/admin/kindler_db/conflict/{conflict.pk}/change/")
    html = response.content.decode()
    assert (
        '<tr class="conflict-differs"><th scope="row">desired_state</th>'
        "<td>present</td><td>stopped</td><td>absent</td></tr>"
    ) in html


@pytest.mark.postgres
def test_keep_postgres_resolves_without_touching_the_row(
    admin_client: Client, conflict: Conflict
) -> None:
    admin_client.post(
        "/admin/kindler_db/conflict/",
        {"action": "keep_remote", "_selected_action": [conflict.pk]},
    )
    assert Conflict.objects.using("postgres").get().resolution == "remote"
    assert (on_postgres("dev").desired_state, on_postgres("dev").http_port) == ("absent", 28080)


@pytest.mark.postgres
def test_apply_local_writes_the_local_side(admin_client: Client, conflict: Conflict) -> None:
    admin_client.post(
        "/admin/kindler_db/conflict/",
        {"action": "apply_local", "_selected_action": [conflict.pk]},
    )
    assert Conflict.objects.using("postgres").get().resolution == "local"
    assert on_postgres("dev").desired_state == "stopped"


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_changelist_says_why_it_is_empty_while_postgres_is_away(
    client: Client, pg: PostgresServer
) -> None:
    with pinned_alias("sqlite"):
        user = make_superuser()
    client.force_login(user)
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    response = client.get("/admin/kindler_db/conflict/")
    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "Conflicts are kept in PostgreSQL, which cannot be reached now; "
        "they are listed again once it is back."
    ]
