"""The original Kindler's environments.csv format, read and written."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

COLUMNS = (
    "env",
    "provider",
    "node_port",
    "pf_port",
    "register_portainer",
    "haproxy_route",
    "http_port",
    "https_port",
    "cluster_subnet",
)
HEADER = "# " + ",".join(COLUMNS)
PORT_COLUMNS = ("node_port", "pf_port", "http_port", "https_port")
FLAG_COLUMNS = ("register_portainer", "haproxy_route")


class RowError(ValueError):
    """A line of the file that cannot become a cluster."""


@dataclass
class Row:
    line: int
    fields: dict[str, Any] = field(default_factory=dict)


def parse(lines: Iterable[str]) -> Iterator[Row | tuple[int, str]]:
    """Yield a Row per cluster line, or (line number, reason) for a bad one."""
    columns: tuple[str, ...] = COLUMNS
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        if text.startswith("#"):
            names = tuple(name.strip() for name in text.lstrip("#").split(","))
            if names and names[0] == "env":
                columns = names
            continue
        values = next(csv.reader([text]))
        try:
            yield Row(number, to_fields(columns, values))
        except RowError as exc:
            yield number, str(exc)


def to_fields(columns: tuple[str, ...], values: list[str]) -> dict[str, Any]:
    """Return the Cluster fields a CSV line describes."""
    if len(values) != len(columns):
        raise RowError(f"expected {len(columns)} values ({','.join(columns)}), found {len(values)}")
    raw = {name: value.strip() for name, value in zip(columns, values, strict=True)}
    fields: dict[str, Any] = {"name": raw.get("env", ""), "provider": raw.get("provider", "")}
    for name in PORT_COLUMNS:
        if name in raw:
            try:
                fields[name] = int(raw[name])
            except ValueError:
                raise RowError(f"{name} must be a whole number, not {raw[name]!r}") from None
    for name in FLAG_COLUMNS:
        if name in raw:
            if raw[name].lower() not in ("true", "false"):
                raise RowError(f"{name} must be true or false, not {raw[name]!r}")
            fields[name] = raw[name].lower() == "true"
    fields["subnet"] = raw.get("cluster_subnet", "")
    return fields


def render(clusters: Iterable[Any]) -> str:
    """Return clusters as an environments.csv document."""
    out = io.StringIO()
    out.write(HEADER + "\n")
    writer = csv.writer(out, lineterminator="\n")
    for cluster in clusters:
        writer.writerow(
            [
                cluster.name,
                cluster.provider,
                cluster.node_port,
                cluster.pf_port,
                str(cluster.register_portainer).lower(),
                str(cluster.haproxy_route).lower(),
                cluster.http_port,
                cluster.https_port,
                cluster.subnet,
            ]
        )
    return out.getvalue()


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def import_lines(lines: Iterable[str], source: str) -> ImportReport:
    """Create or update a cluster per valid line; report the others."""
    from django.core.exceptions import ValidationError
    from django.db import router, transaction

    from clusters.models import Cluster, Operation, OperationLog, OperationStatus
    from clusters.validators import one_line

    report = ImportReport()
    for item in parse(lines):
        if isinstance(item, tuple):
            report.rejected.append(item)
            continue
        using = router.db_for_write(Cluster)
        cluster = Cluster.objects.using(using).filter(name=item.fields["name"]).first()
        is_new = cluster is None
        cluster = cluster or Cluster(name=item.fields["name"])
        changed = [name for name, value in item.fields.items() if getattr(cluster, name) != value]
        if not is_new and not changed:
            report.unchanged.append(cluster.name)
            continue
        for name, value in item.fields.items():
            setattr(cluster, name, value)
        try:
            cluster.full_clean()
        except ValidationError as exc:
            report.rejected.append((item.line, one_line(exc)))
            continue
        with transaction.atomic(using=using):
            cluster.save(using=using)
            OperationLog.objects.using(using).create(
                cluster_name=cluster.name,
                operation=Operation.IMPORT,
                status=OperationStatus.SUCCESS,
                log_output=f"{'Imported' if is_new else 'Updated'} from {source} line {item.line}"
                + ("" if is_new else f" ({', '.join(changed)})"),
            )
        (report.created if is_new else report.updated).append(cluster.name)
    return report
