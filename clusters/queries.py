"""The reads on every API request's path, as one statement each, compiled once per database.

Building the SQL of even `Cluster.objects.get(name=...)` costs the ORM more
than running it (some 40 % of an API read, bench/api.py; reading the
registry's one row took 880 µs through the ORM and 145 µs as plain SQL):
the statement never changes, so each read compiles it once per alias and
process, then runs it with new parameters and builds the models as the ORM
would (Model.from_db, the database's own value converters). The cluster
list builds no models at all: only the columns the API shows, as plain rows
(ClusterRow), which halves its cost per cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from django.db import connections, router
from django.db.models import Model, QuerySet

from clusters.models import Cluster, Registration

# Stands for the parameter while a statement is compiled; never sent.
_NAME = "name-placeholder"


@dataclass(frozen=True)
class Compiled:
    """One SELECT: its SQL, its columns as field attnames, their converters."""

    sql: str
    params: tuple[Any, ...]
    attnames: list[str]
    converters: list[tuple[int, list[Any], Any]]


_compiled: dict[tuple[str, str], Compiled] = {}


def _compile(queryset: QuerySet[Any], alias: str) -> Compiled:
    compiler = queryset.query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    columns = [column for column, _, _ in compiler.select]
    converters = compiler.get_converters(columns)
    return Compiled(
        sql=sql,
        params=tuple(params),
        attnames=[column.target.attname for column in columns],
        converters=[(pos, funcs, expr) for pos, (funcs, expr) in converters.items()],
    )


def _rows(
    model: type[Model],
    key: str,
    build: Callable[[], QuerySet[Any]],
    params: tuple[Any, ...],
    suffix: str = "",
) -> tuple[str, Compiled, list[list[Any]]]:
    """Run the statement (and suffix); return the alias, the statement and its rows, converted."""
    alias = router.db_for_read(model)
    compiled = _compiled.get((key, alias))
    if compiled is None:
        compiled = _compiled[(key, alias)] = _compile(build(), alias)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(compiled.sql + suffix, params or compiled.params)
        rows = cursor.fetchall()
    converted = []
    for raw in rows:
        row = list(raw)
        for pos, funcs, expression in compiled.converters:
            value = row[pos]
            for convert in funcs:
                value = convert(value, expression, connection)
            row[pos] = value
        converted.append(row)
    return alias, compiled, converted


def _run[M: Model](
    model: type[M], key: str, build: Callable[[], QuerySet[M]], params: tuple[Any, ...] = ()
) -> list[M]:
    alias, compiled, rows = _rows(model, key, build, params)
    return [model.from_db(alias, compiled.attnames, row) for row in rows]


class ClusterRow(NamedTuple):
    """A cluster as the API lists it: those columns only, no model behind them.

    A tuple, not a frozen dataclass, whose __init__ sets every field through
    object.__setattr__: 2.3 µs more per cluster.
    """

    name: str
    provider: str
    host: str
    node_port: int
    pf_port: int
    http_port: int
    https_port: int
    subnet: str
    server_ip: str | None
    register_portainer: bool
    haproxy_route: bool
    register_argocd: bool
    actual_state: str
    desired_state: str
    last_reconciled_at: datetime | None
    reconcile_error: str
    created_at: datetime
    updated_at: datetime


ROW_FIELDS = ClusterRow._fields


def clusters_page(count: int, offset: int = 0, after: str | None = None) -> list[ClusterRow]:
    """Return up to count clusters in the model's order (by name), as the API lists them.

    Given `after`, offset counts from the first name after it. A long list is
    read in pieces that way, each found through the name's index however far
    along it is, where an offset makes the database step over that many rows.
    """
    # LIMIT and OFFSET as parameters: one compiled statement serves every page.
    suffix = " LIMIT %s OFFSET %s"
    if after is None:
        build = partial(Cluster.objects.values_list, *ROW_FIELDS)
        _, _, rows = _rows(Cluster, "page", build, (count, offset), suffix)
    else:
        _, _, rows = _rows(Cluster, "after", _named_after, (after, count, offset), suffix)
    return [ClusterRow._make(row) for row in rows]


def _named_after() -> QuerySet[Any]:
    return Cluster.objects.filter(name__gt=_NAME).values_list(*ROW_FIELDS)


# The Docker hosts clusters are on, each found through the host index in one
# step from the last (a loose index scan): a handful of lookups however many
# clusters there are, where DISTINCT reads an index entry per cluster.
HOSTS_SQL = """
WITH RECURSIVE hosts (host) AS (
    SELECT MIN(host) FROM clusters_cluster
    UNION ALL
    SELECT (SELECT MIN(host) FROM clusters_cluster WHERE host > hosts.host)
    FROM hosts WHERE hosts.host IS NOT NULL
)
SELECT host FROM hosts WHERE host IS NOT NULL
"""


def cluster_hosts() -> list[str]:
    """Return every Docker host that has a cluster ('' for unplaced ones), in order."""
    with connections[router.db_for_read(Cluster)].cursor() as cursor:
        cursor.execute(HOSTS_SQL)
        return [host for (host,) in cursor.fetchall()]


def cluster_named(name: str) -> Cluster | None:
    """Return the cluster called name, or None."""
    found = _run(Cluster, "named", lambda: Cluster.objects.filter(name=_NAME), (name,))
    return found[0] if found else None


def registrations() -> list[Registration]:
    """Return every registration, in the model's order, without what each observed."""
    return _run(Registration, "registrations", lambda: Registration.objects.defer("observed"))
