from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from clusters.models import Cluster, OperationLog
from tests.conftest import BOTH

pytestmark = pytest.mark.django_db(databases=BOTH)

SAMPLE = settings.BASE_DIR / "config" / "environments.csv"


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_environments", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_shipped_sample_imports_four_clusters(alias: str) -> None:
    assert run() == ("4 created, 0 updated, 0 unchanged, 0 rejected.\n", "")
    assert list(Cluster.objects.values_list("name", "provider", "http_port", "subnet")) == [
        ("dev", "kind", 18090, ""),
        ("devops", "k3d", 18080, "10.100.0.0/16"),
        ("prod", "k3d", 18110, "10.102.0.0/16"),
        ("uat", "k3d", 18100, "10.101.0.0/16"),
    ]


def test_booleans_are_read(alias: str) -> None:
    run()
    prod = Cluster.objects.get(name="prod")
    assert (prod.register_portainer, prod.haproxy_route) == (True, False)


def test_a_second_run_changes_nothing(alias: str) -> None:
    run()
    versions = dict(Cluster.objects.values_list("name", "version"))
    assert run() == ("0 created, 0 updated, 4 unchanged, 0 rejected.\n", "")
    assert dict(Cluster.objects.values_list("name", "version")) == versions
    assert OperationLog.objects.count() == 4


def test_each_import_is_logged_as_an_operation(alias: str) -> None:
    run()
    log = OperationLog.objects.get(cluster_name="uat")
    assert (log.operation, log.status, log.log_output) == (
        "import",
        "success",
        f"Imported from {SAMPLE} line 5",
    )


def test_a_changed_line_updates_the_cluster(alias: str, tmp_path: Path) -> None:
    path = tmp_path / "environments.csv"
    path.write_text("dev,kind,30080,19001,true,true,18090,18453,\n")
    run(str(path))
    path.write_text("dev,kind,30080,19001,true,true,18095,18453,\n")
    assert run(str(path))[0] == "0 created, 1 updated, 0 unchanged, 0 rejected.\n"
    assert Cluster.objects.get(name="dev").http_port == 18095


def test_rejected_lines_are_reported_and_the_valid_ones_imported(
    alias: str, tmp_path: Path
) -> None:
    path = tmp_path / "environments.csv"
    path.write_text(
        "# env,provider,node_port,pf_port,register_portainer,haproxy_route,http_port,https_port,"
        "cluster_subnet\n"
        "\n"
        "# a comment\n"
        "dev,kind,30080,19001,true,true,18090,18453,\n"
        "Bad_Name,k3d,30080,19002,true,true,18100,18463,\n"
        "uat,k3d,30080,19003,maybe,true,18110,18473,\n"
        "qa,k3d,30080,abc,true,true,18120,18483,\n"
        "stage,kind,30080,19004,true,true,18130,18493,10.1.0.0/16\n"
        "short,k3d,30080\n"
        "clash,k3d,30080,19005,true,true,18090,18503,\n"
    )
    with pytest.raises(CommandError, match=f"^6 line\\(s\\) of {path} were rejected.$"):
        run(str(path))
    assert list(Cluster.objects.values_list("name", flat=True)) == ["dev"]


def test_rejections_name_the_line_and_the_reason(alias: str, tmp_path: Path) -> None:
    path = tmp_path / "environments.csv"
    path.write_text(
        "dev,kind,30080,19001,true,true,18090,18453,\n"
        "uat,k3d,30080,19003,maybe,true,18110,18473,\n"
        "stage,kind,30080,19004,true,true,18130,18493,10.1.0.0/16\n"
        "clash,k3d,30080,19005,true,true,18090,18503,\n"
    )
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("import_environments", str(path), stdout=StringIO(), stderr=err)
    assert err.getvalue().splitlines() == [
        f"{path}:2: rejected: register_portainer must be true or false, not 'maybe'",
        f"{path}:3: rejected: subnet: A subnet can only be set for k3d clusters; kind assigns "
        "its own.",
        f"{path}:4: rejected: http_port: Port 18090 is already used by cluster dev.",
    ]


def test_a_missing_file_is_a_clear_error(alias: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(CommandError, match=f"^Cannot read {missing}: No such file or directory.$"):
        run(str(missing))


def test_a_binary_file_is_a_clear_error(alias: str, tmp_path: Path) -> None:
    path = tmp_path / "image.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CommandError, match=f"^{path} is not a UTF-8 text file.$"):
        run(str(path))
