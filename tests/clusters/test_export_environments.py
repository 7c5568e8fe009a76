"""`manage.py export_environments` (clusters/management/commands/export_environments.py)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from clusters.environments import HEADER
from clusters.models import Cluster
from kindler.db.failover.pinning import pinned_alias
from tests.conftest import BOTH
from tests.factories import make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)

SAMPLE = settings.BASE_DIR / "config" / "environments.csv"
EXPORTED = (
    HEADER
    + """
dev,kind,30080,19001,true,true,18090,18453,
devops,k3d,30080,19000,true,true,18080,18443,10.100.0.0/16
prod,k3d,30080,19003,true,false,18110,18473,10.102.0.0/16
uat,k3d,30080,19002,true,true,18100,18463,10.101.0.0/16
"""
)


def export(*args: str) -> str:
    out = StringIO()
    call_command("export_environments", *args, stdout=out)
    return out.getvalue()


def import_file(path: Path) -> str:
    out = StringIO()
    call_command("import_environments", str(path), stdout=out, stderr=StringIO())
    return out.getvalue()


def snapshot() -> list[tuple[object, ...]]:
    fields = ("name", "provider", "node_port", "pf_port", "http_port", "https_port", "subnet",
              "register_portainer", "haproxy_route")  # fmt: skip
    return list(Cluster.objects.order_by("name").values_list(*fields))


def test_export_writes_the_inventory_to_stdout(alias: str) -> None:
    import_file(SAMPLE)
    assert export() == EXPORTED


def test_export_writes_to_a_file(alias: str, tmp_path: Path) -> None:
    import_file(SAMPLE)
    target = tmp_path / "out.csv"
    assert export(str(target)) == f"4 cluster(s) written to {target}.\n"
    assert target.read_text() == EXPORTED


def test_export_of_an_empty_inventory_is_the_header(alias: str) -> None:
    assert export() == EXPORTED.splitlines(keepends=True)[0]


def test_clusters_marked_for_deletion_are_left_out(alias: str) -> None:
    make_cluster(name="keep")
    make_cluster(name="going", desired_state="absent")
    assert [line.split(",")[0] for line in export().splitlines()[1:]] == ["keep"]


def test_import_export_import_round_trips_unchanged(alias: str, tmp_path: Path) -> None:
    import_file(SAMPLE)
    before = snapshot()
    target = tmp_path / "exported.csv"
    export(str(target))
    assert import_file(target) == "0 created, 0 updated, 4 unchanged, 0 rejected.\n"
    assert snapshot() == before


@pytest.mark.postgres
def test_an_export_imported_into_an_empty_inventory_exports_the_same(tmp_path: Path) -> None:
    target = tmp_path / "exported.csv"
    with pinned_alias("postgres"):
        import_file(SAMPLE)
        before = snapshot()
        export(str(target))
    with pinned_alias("sqlite"):
        assert import_file(target) == "4 created, 0 updated, 0 unchanged, 0 rejected.\n"
        assert snapshot() == before
        assert export() == target.read_text()


def test_an_unwritable_path_is_a_command_error(alias: str, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"^Cannot write .*/missing/out\.csv: No such file"):
        export(str(tmp_path / "missing" / "out.csv"))
