"""The reads on every API request's path, as one statement each, compiled once per database.

Building the SQL of even `Cluster.objects.get(name=...)` costs the ORM more
than running it (some 40 % of an API read, bench/api.py; reading the
registry's one row took 880 µs through the ORM and 145 µs as plain SQL):
the statement never changes, so each read compiles it once per alias and
process, then runs it with new parameters and builds the models as the ORM
would (Model.from_db, the database's own value converters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def _run[M: Model](
    model: type[M], key: str, build: Callable[[], QuerySet[M]], params: tuple[Any, ...] = ()
) -> list[M]:
    alias = router.db_for_read(model)
    compiled = _compiled.get((key, alias))
    if compiled is None:
        compiled = _compiled[(key, alias)] = _compile(build(), alias)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(compiled.sql, params or compiled.params)
        rows = cursor.fetchall()
    found = []
    for raw in rows:
        row = list(raw)
        for pos, funcs, expression in compiled.converters:
            value = row[pos]
            for convert in funcs:
                value = convert(value, expression, connection)
            row[pos] = value
        found.append(model.from_db(alias, compiled.attnames, row))
    return found


def all_clusters() -> list[Cluster]:
    """Return every cluster, in the model's order."""
    return _run(Cluster, "all", Cluster.objects.all)


def cluster_named(name: str) -> Cluster | None:
    """Return the cluster called name, or None."""
    found = _run(Cluster, "named", lambda: Cluster.objects.filter(name=_NAME), (name,))
    return found[0] if found else None


def registrations() -> list[Registration]:
    """Return every registration, in the model's order, without what each observed."""
    return _run(Registration, "registrations", lambda: Registration.objects.defer("observed"))
