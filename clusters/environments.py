"""The original Kindler's environments.csv format, read and written."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, router, transaction

from clusters import placement, preflight
from clusters.models import Cluster, Operation, OperationLog, OperationStatus
from clusters.validators import one_line, port_validators

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
# The Docker host is a column of Kindler's own: written when asked for or
# when clusters live on more than one host, so files for one host stay in
# the original nine columns its scripts read by position.
HOST_COLUMN = "host"
HOST_FIXED = "a cluster stays on its Docker host: delete it and create it on the other host"
PORT_COLUMNS = ("node_port", "pf_port", "http_port", "https_port")
FLAG_COLUMNS = ("register_portainer", "haproxy_route")
# Far above any real line (nine short values), small enough that a file with
# no line breaks at all is never held in memory.
MAX_LINE_LENGTH = 4096
# No value of the format is longer than a cluster name, but for a host name.
MAX_FIELD_LENGTH = 63
MAX_HOST_LENGTH = 253
# Room for a byte order mark and a CRLF around a line of the longest length.
_READ_LIMIT = MAX_LINE_LENGTH + len(codecs.BOM_UTF8) + len(b"\r\n")
_SKIP_CHUNK = 64 * 1024
RACE_MESSAGE = (
    "the database refused it: a cluster saved at the same time took its name or a host port"
)


class RowError(ValueError):
    """A line of the file that cannot become a cluster."""


@dataclass
class Row:
    line: int
    fields: dict[str, Any] = field(default_factory=dict)


def read_lines(stream: BinaryIO) -> Iterator[str | RowError]:
    """Yield each line of stream without its line break, or why it cannot be read.

    A first line that is not UTF-8 raises UnicodeDecodeError: the file is not text.
    """
    first = True
    while raw := stream.readline(_READ_LIMIT):
        complete = raw.endswith(b"\n") or len(raw) < _READ_LIMIT
        if not complete:
            _skip_rest_of_line(stream)
        if first:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        text = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not complete or len(text) > MAX_LINE_LENGTH:
            yield RowError(f"line is longer than {MAX_LINE_LENGTH} bytes")
        else:
            try:
                yield text.decode("utf-8")
            except UnicodeDecodeError:
                if first:
                    raise
                yield RowError("line is not UTF-8 text")
        first = False


def _skip_rest_of_line(stream: BinaryIO) -> None:
    while chunk := stream.readline(_SKIP_CHUNK):
        if chunk.endswith(b"\n"):
            return


def parse(lines: Iterable[str | RowError]) -> Iterator[Row | tuple[int, str]]:
    """Yield a Row per cluster line, or (line number, reason) for a bad one."""
    columns: tuple[str, ...] = COLUMNS
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, RowError):
            yield number, str(raw)
            continue
        text = raw.strip()
        if not text:
            continue
        if text.startswith("#"):
            names = tuple(name.strip() for name in text.lstrip("#").split(","))
            if names and names[0] == "env":
                columns = names
            continue
        try:
            fields = to_fields(columns, next(csv.reader([text])))
        except (RowError, csv.Error) as exc:
            yield number, str(exc)
            continue
        name = fields["name"]
        if name and seen.setdefault(name, number) != number:
            yield number, f"env {name} already appears on line {seen[name]}"
            continue
        yield Row(number, fields)


def to_fields(columns: tuple[str, ...], values: list[str]) -> dict[str, Any]:
    """Return the Cluster fields a CSV line describes."""
    if len(values) != len(columns):
        raise RowError(f"expected {len(columns)} values ({','.join(columns)}), found {len(values)}")
    raw = {name: value.strip() for name, value in zip(columns, values, strict=True)}
    for name, value in raw.items():
        limit = MAX_HOST_LENGTH if name == HOST_COLUMN else MAX_FIELD_LENGTH
        if len(value) > limit:
            raise RowError(f"{name} has {len(value)} characters; values have at most {limit}")
    fields: dict[str, Any] = {"name": raw.get("env", ""), "provider": raw.get("provider", "")}
    for name in PORT_COLUMNS:
        if name in raw:
            fields[name] = _port(name, raw[name])
    for name in FLAG_COLUMNS:
        if name in raw:
            if raw[name].lower() not in ("true", "false"):
                raise RowError(f"{name} must be true or false, not {raw[name]!r}")
            fields[name] = raw[name].lower() == "true"
    fields["subnet"] = raw.get("cluster_subnet", "")
    if raw.get(HOST_COLUMN):
        fields["host"] = raw[HOST_COLUMN]
    return fields


def _port(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise RowError(f"{name} must be a whole number, not {value!r}")
    port = int(value)
    # Checked here: a number past the database's integer range fails the
    # model's own checks with a database error instead of a message.
    try:
        for validate in port_validators:
            validate(port)
    except ValidationError as exc:
        raise RowError(f"{name}: {one_line(exc)}") from None
    return port


def render(clusters: Iterable[Any], with_host: bool = False) -> str:
    """Return clusters as an environments.csv document, with a host column when needed."""
    clusters = list(clusters)
    with_host = with_host or len({cluster.host for cluster in clusters}) > 1
    out = io.StringIO()
    out.write(HEADER + (f",{HOST_COLUMN}" if with_host else "") + "\n")
    writer = csv.writer(out, lineterminator="\n")
    for cluster in clusters:
        host = [cluster.host] if with_host else []
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
                *host,
            ]
        )
    return out.getvalue()


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    written: bool = True


def import_file(
    stream: BinaryIO, source: str, *, check: bool = False, atomic: bool = False
) -> ImportReport:
    """Import every line of an environments.csv file opened in binary mode."""
    return import_lines(read_lines(stream), source, check=check, atomic=atomic)


def import_lines(
    lines: Iterable[str | RowError], source: str, *, check: bool = False, atomic: bool = False
) -> ImportReport:
    """Create or update a cluster per valid line; report the others.

    With check nothing is written; with atomic nothing is unless every line is good.
    """
    using = router.db_for_write(Cluster)
    report = ImportReport()
    whole: AbstractContextManager[Any] = (
        transaction.atomic(using=using) if check or atomic else nullcontext()
    )
    with whole:
        for item in parse(lines):
            if isinstance(item, tuple):
                report.rejected.append(item)
                continue
            try:
                verdict = _import_row(item, source, using)
            except (ValidationError, IntegrityError, DataError) as exc:
                report.rejected.append((item.line, _reason(exc)))
                continue
            getattr(report, verdict).append(item.fields["name"])
        if check or (atomic and report.rejected):
            # Every line was tried for its verdict; none of it stays.
            transaction.set_rollback(True, using=using)
            report.written = False
    return report


def _import_row(row: Row, source: str, using: str) -> str:
    """Save one line's cluster in a savepoint; return created, updated or unchanged."""
    cluster = Cluster(name=row.fields["name"])
    try:
        # A savepoint per line: a line the database refuses leaves the others alone.
        with transaction.atomic(using=using):
            found = Cluster.objects.using(using).filter(name=cluster.name).first()
            is_new = found is None
            cluster = found or cluster
            if found is None and "host" not in row.fields:
                cluster.host = placement.choose_host()
            if found is not None and row.fields.get("host", found.host) != found.host:
                raise ValidationError({"host": [HOST_FIXED]})
            changed = [
                name for name, value in row.fields.items() if getattr(cluster, name) != value
            ]
            if not is_new and not changed:
                return "unchanged"
            for name, value in row.fields.items():
                setattr(cluster, name, value)
            cluster.full_clean()
            if is_new or "provider" in changed:
                # What a create checks: a provider the host's live reconcilers
                # lack is refused here, not failed and retried by them.
                preflight.check_request(cluster)
            else:
                preflight.check_subnet(cluster)
            cluster.save(using=using)
            OperationLog.objects.using(using).create(
                cluster_name=cluster.name,
                operation=Operation.IMPORT,
                status=OperationStatus.SUCCESS,
                log_output=f"{'Imported' if is_new else 'Updated'} from {source} line {row.line}"
                + ("" if is_new else f" ({', '.join(changed)})"),
            )
    except IntegrityError:
        # Another writer took the name or a port after the checks passed; once
        # it has committed, the checks say which.
        with transaction.atomic(using=using):
            cluster.full_clean()
        raise
    return "created" if is_new else "updated"


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return one_line(exc)
    if isinstance(exc, IntegrityError):
        return RACE_MESSAGE
    return "the database cannot store one of its values"
