from __future__ import annotations

import contextlib
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db.models.signals import pre_save

from clusters.models import Cluster, OperationLog
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster, make_registration

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


def test_a_subnet_overlapping_another_clusters_is_rejected(alias: str, tmp_path: Path) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16")
    path = tmp_path / "environments.csv"
    path.write_text("qa,k3d,30080,19005,true,true,18190,18503,10.101.4.0/24\n")
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("import_environments", str(path), stdout=StringIO(), stderr=err)
    assert err.getvalue().splitlines() == [
        f"{path}:1: rejected: subnet: subnet 10.101.4.0/24 overlaps cluster dev"
    ]
    assert Cluster.objects.filter(name="qa").exists() is False


def test_a_provider_the_hosts_live_reconciler_lacks_is_rejected(alias: str, tmp_path: Path) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.8.3"})
    path = tmp_path / "environments.csv"
    path.write_text(
        "qa,kind,30080,19005,true,true,18190,18503,\n"
        "ci,k3d,30081,19006,true,true,18191,18504,10.120.0.0/16\n"
    )
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("import_environments", str(path), stdout=StringIO(), stderr=err)
    assert err.getvalue().splitlines() == [
        f"{path}:1: rejected: provider: the reconciler on docker-1 has no kind on its PATH; "
        "install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    ]
    assert list(Cluster.objects.values_list("name", "host")) == [("ci", "docker-1")]
    assert OperationLog.objects.exclude(operation="import").count() == 0


def test_a_missing_file_is_a_clear_error(alias: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(CommandError, match=f"^Cannot read {missing}: No such file or directory.$"):
        run(str(missing))


def test_a_binary_file_is_a_clear_error(alias: str, tmp_path: Path) -> None:
    path = tmp_path / "image.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CommandError, match=f"^{path} is not a UTF-8 text file.$"):
        run(str(path))


def run_refused(*args: str) -> tuple[str, str, str]:
    """Run the import expecting a refusal; return its output, errors and message."""
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as refusal:
        call_command("import_environments", *args, stdout=out, stderr=err)
    assert refusal.value.returncode == 1
    return out.getvalue(), err.getvalue(), str(refusal.value)


def write_lines(path: Path, *lines: str) -> Path:
    """Write lines with CRLF endings after a UTF-8 byte order mark, as Windows tools do."""
    path.write_bytes(b"\xef\xbb\xbf" + "".join(line + "\r\n" for line in lines).encode())
    return path


HEADER_LINE = (
    "# env,provider,node_port,pf_port,register_portainer,haproxy_route,http_port,https_port,"
    "cluster_subnet"
)
GOOD_LINES = (
    "dev,kind,30080,19001,true,true,18090,18453,",
    "stage,k3d,30080,19008,true,true,18130,18593,10.1.0.0/16",
)


@pytest.fixture
def every_bad_line(tmp_path: Path) -> Path:
    """A file with the good lines and one bad line of each kind, the first a BOM header.

    One line asks for a host port of the cluster old, saved before the import.
    """
    make_cluster(name="old", http_port=18700, https_port=18701, pf_port=18702)
    return write_lines(
        tmp_path / "environments.csv",
        HEADER_LINE,
        GOOD_LINES[0],
        "short,k3d,30080",
        "qa,k3d,30080,abc,true,true,18120,18483,",
        "big,k3d,30080,19005,true,true,99999999999999999999,18503,",
        "uat,k3d,30080,19003,maybe,true,18110,18473,",
        "Bad_Name,k3d,30080,19002,true,true,18100,18463,",
        "dev,kind,30080,19006,true,true,18190,18553,",
        "clash,k3d,30080,19007,true,true,18090,18563,",
        "taken,k3d,30080,18702,true,true,18140,18573,",
        "x" * 5000,
        "a" * 64 + ",k3d,30080,19009,true,true,18150,18583,",
        GOOD_LINES[1],
    )


def test_every_bad_line_is_reported_with_its_number(alias: str, every_bad_line: Path) -> None:
    path = every_bad_line
    assert run_refused(str(path))[1].splitlines() == [
        f"{path}:3: rejected: expected 9 values (env,provider,node_port,pf_port,"
        "register_portainer,haproxy_route,http_port,https_port,cluster_subnet), found 3",
        f"{path}:4: rejected: pf_port must be a whole number, not 'abc'",
        f"{path}:5: rejected: http_port: Ports must be between 1024 and 65535.",
        f"{path}:6: rejected: register_portainer must be true or false, not 'maybe'",
        f"{path}:7: rejected: name: Use lower-case letters, digits and dashes, starting and "
        "ending with a letter or digit (a DNS-1123 label), e.g. dev-1.",
        f"{path}:8: rejected: env dev already appears on line 2",
        f"{path}:9: rejected: http_port: Port 18090 is already used by cluster dev.",
        f"{path}:10: rejected: pf_port: Port 18702 is already used by cluster old.",
        f"{path}:11: rejected: line is longer than 4096 bytes",
        f"{path}:12: rejected: env has 64 characters; values have at most 63",
    ]


def test_the_good_lines_among_bad_ones_are_imported(alias: str, every_bad_line: Path) -> None:
    out, _, refusal = run_refused(str(every_bad_line))
    assert out == "2 created, 0 updated, 0 unchanged, 10 rejected.\n"
    assert refusal == f"10 line(s) of {every_bad_line} were rejected."
    assert list(Cluster.objects.values_list("name", flat=True)) == ["dev", "old", "stage"]


def test_a_byte_order_mark_and_crlf_line_ends_are_read(alias: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "environments.csv", HEADER_LINE, *GOOD_LINES)
    assert run(str(path)) == ("2 created, 0 updated, 0 unchanged, 0 rejected.\n", "")
    assert list(Cluster.objects.values_list("name", "subnet")) == [
        ("dev", ""),
        ("stage", "10.1.0.0/16"),
    ]


def test_check_reports_every_line_and_writes_nothing(alias: str, every_bad_line: Path) -> None:
    out, err, refusal = run_refused("--check", str(every_bad_line))
    assert out == (
        "2 created, 0 updated, 0 unchanged, 10 rejected.\nNothing written: --check only reports.\n"
    )
    assert (len(err.splitlines()), refusal) == (
        10,
        f"10 line(s) of {every_bad_line} were rejected.",
    )
    assert list(Cluster.objects.values_list("name", flat=True)) == ["old"]
    assert OperationLog.objects.count() == 0


def test_check_of_a_good_file_succeeds_and_writes_nothing(alias: str) -> None:
    assert run("--check") == (
        "4 created, 0 updated, 0 unchanged, 0 rejected.\nNothing written: --check only reports.\n",
        "",
    )
    assert (Cluster.objects.count(), OperationLog.objects.count()) == (0, 0)


def test_atomic_writes_nothing_when_a_line_is_bad(alias: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "environments.csv", *GOOD_LINES, "uat,k3d,30080")
    out, err, refusal = run_refused("--atomic", str(path))
    assert (out, err, refusal) == (
        "2 created, 0 updated, 0 unchanged, 1 rejected.\n"
        "Nothing written: --atomic imports a file only when every line is good.\n",
        f"{path}:3: rejected: expected 9 values (env,provider,node_port,pf_port,"
        "register_portainer,haproxy_route,http_port,https_port,cluster_subnet), found 3\n",
        f"1 line(s) of {path} were rejected.",
    )
    assert (Cluster.objects.count(), OperationLog.objects.count()) == (0, 0)


def test_atomic_imports_everything_when_every_line_is_good(alias: str) -> None:
    assert run("--atomic") == ("4 created, 0 updated, 0 unchanged, 0 rejected.\n", "")
    assert list(Cluster.objects.values_list("name", flat=True)) == ["dev", "devops", "prod", "uat"]
    assert OperationLog.objects.count() == 4


def test_a_file_without_line_breaks_is_one_rejected_line(alias: str, tmp_path: Path) -> None:
    path = tmp_path / "environments.csv"
    path.write_bytes(b"a" * 5 * 1024 * 1024)
    assert run_refused(str(path)) == (
        "0 created, 0 updated, 0 unchanged, 1 rejected.\n",
        f"{path}:1: rejected: line is longer than 4096 bytes\n",
        f"1 line(s) of {path} were rejected.",
    )


def test_the_line_after_an_over_long_one_is_read(alias: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "environments.csv", "#" * 200_000, GOOD_LINES[0])
    _, err, _ = run_refused(str(path))
    assert err == f"{path}:1: rejected: line is longer than 4096 bytes\n"
    assert list(Cluster.objects.values_list("name", flat=True)) == ["dev"]


@pytest.mark.parametrize(
    ("length", "rejected"),
    [(4096, "0 rejected"), (4097, "1 rejected")],
)
def test_lines_are_limited_to_4096_bytes(
    alias: str, tmp_path: Path, length: int, rejected: str
) -> None:
    # A comment: only its length decides its verdict.
    path = write_lines(tmp_path / "environments.csv", "#" * length)
    out = StringIO()
    with contextlib.suppress(CommandError):
        call_command("import_environments", str(path), stdout=out, stderr=StringIO())
    assert out.getvalue() == f"0 created, 0 updated, 0 unchanged, {rejected}.\n"


def test_a_later_line_that_is_not_utf8_is_rejected(alias: str, tmp_path: Path) -> None:
    path = tmp_path / "environments.csv"
    path.write_bytes(f"{GOOD_LINES[0]}\n".encode() + b"qa,k3d,\xff\xfe\n")
    _, err, _ = run_refused(str(path))
    assert err == f"{path}:2: rejected: line is not UTF-8 text\n"
    assert list(Cluster.objects.values_list("name", flat=True)) == ["dev"]


@pytest.fixture
def rival_insert() -> Iterator[None]:
    """Insert a cluster named qa just before the import saves its own qa."""

    def insert_rival(sender: type[Cluster], instance: Cluster, **kwargs: Any) -> None:
        if instance.name == "qa" and instance.pk is None:
            Cluster.objects.using(kwargs["using"]).bulk_create(
                [Cluster(**cluster_fields(name="qa"))]
            )

    pre_save.connect(insert_rival, sender=Cluster)
    yield
    pre_save.disconnect(insert_rival, sender=Cluster)


def test_a_line_the_database_refuses_is_rejected_and_the_next_imported(
    alias: str, tmp_path: Path, rival_insert: None
) -> None:
    path = write_lines(
        tmp_path / "environments.csv", "qa,k3d,30080,19001,true,true,18090,18453,", GOOD_LINES[1]
    )
    assert run_refused(str(path)) == (
        "1 created, 0 updated, 0 unchanged, 1 rejected.\n",
        f"{path}:1: rejected: the database refused it: a cluster saved at the same time took "
        "its name or a host port\n",
        f"1 line(s) of {path} were rejected.",
    )
    assert list(Cluster.objects.values_list("name", flat=True)) == ["stage"]
