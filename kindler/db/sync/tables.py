"""Plain-SQL access to a synced model's table, fast enough for bulk sync."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any

from django.apps import apps
from django.db.models import NOT_PROVIDED, Field, JSONField, Model, Value


@dataclass(frozen=True)
class Table:
    """A synced model's columns, minus the local integer id."""

    model: type[Model]
    fields: tuple[Field[Any, Any], ...] = field(default=())

    @property
    def name(self) -> str:
        return str(self.model._meta.db_table)

    @property
    def columns(self) -> list[str]:
        return [str(f.column) for f in self.fields]

    @property
    def attnames(self) -> list[str]:
        return [f.attname for f in self.fields]

    @property
    def written(self) -> list[Field[Any, Any]]:
        """Return the fields a writer sets: all but uid, version and the automatic timestamps."""
        return [
            f
            for f in self.fields
            if f.attname not in ("uid", "version")
            and not getattr(f, "auto_now", False)
            and not getattr(f, "auto_now_add", False)
        ]

    @cached_property
    def label(self) -> str:
        return str(self.model._meta.label_lower)

    @cached_property
    def unique_names(self) -> list[str]:
        """Return the other unique columns (a cluster's name): insert/insert clashes."""
        return [f.attname for f in self.fields if f.unique and f.attname != "uid"]

    @cached_property
    def exclusive(self) -> list[str]:
        """Return the columns whose values one row at most may hold, across all of them."""
        return list(getattr(self.model, "exclusive_fields", ()))

    @cached_property
    def scope(self) -> str | None:
        """Return the column within whose values the exclusive ones are held once."""
        return getattr(self.model, "exclusive_scope", None)

    @cached_property
    def column_set(self) -> frozenset[str]:
        return frozenset(self.columns)

    @cached_property
    def keyed_by_column(self) -> bool:
        """Return True when every field's attname is its column (no db_column, no foreign key)."""
        return all(f.attname == f.column for f in self.fields)

    @cached_property
    def layout(self) -> tuple[tuple[str, str, Any], ...]:
        """Return (attname, column, value when absent) of each field, for decoding a journal row."""
        return tuple((f.attname, str(f.column), absent(f)) for f in self.fields)

    def exclusive_keys(self, row: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Return the exclusive values row holds, as keys that clash within one scope.

        The values share one key space across their columns: a port held as
        one column clashes with the same port in another.
        """
        scope = row.get(self.scope) if self.scope else None
        return [("", scope, row[c]) for c in self.exclusive if row[c] is not None]

    def casts(self, connection: Any) -> str:
        """Return a VALUES template casting each column to its PostgreSQL type."""
        return "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in self.fields) + ")"

    def quoted(self) -> str:
        return ", ".join(f'"{c}"' for c in self.columns)

    def from_json_rows(self, connection: Any) -> str:
        """Return a SELECT of rows passed as one JSON array (%s), keyed by attname.

        Every value goes in as text and is cast to its column's type, as
        casts() does for a VALUES list: PostgreSQL reads the rows without a
        placeholder per value for the driver to format.
        """
        names = ", ".join(f'"{a}" text' for a in self.attnames)
        values = ", ".join(
            f'v."{f.attname}"::{f.db_type(connection)} AS "{f.column}"' for f in self.fields
        )
        return f"SELECT {values} FROM jsonb_to_recordset(%s::jsonb) AS v({names})"

    def prepare(self, row: dict[str, Any], connection: Any) -> list[Any]:
        """Return row's values adapted for connection, in column order."""
        return [f.get_db_prep_save(row.get(f.attname), connection) for f in self.fields]

    def from_db(self, values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
        """Return a row dict from values read in column order (PostgreSQL types)."""
        return dict(zip(self.attnames, values, strict=True))

    def from_sqlite(self, values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
        """Return a row dict from values SQLite returned, in Python types."""
        return {f.attname: to_python(f, v) for f, v in zip(self.fields, values, strict=True)}

    def from_json(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        """Return a row dict from its JSON form (a conflict's local or remote side)."""
        if data is None:
            return None
        return {f.attname: to_python(f, data.get(f.attname)) for f in self.fields}


def row_name(row: dict[str, Any]) -> str:
    """Return what people call a synced row: a cluster's name, a log's cluster."""
    return str(row.get("name") or row.get("cluster_name") or "")


def comparable(model_field: Field[Any, Any], value: Any) -> Any:
    """Return value in a form equal for SQLite's and PostgreSQL's copy of one row."""
    # SQLite holds JSON as Python wrote it, PostgreSQL as jsonb reorders it.
    if isinstance(model_field, JSONField) and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return to_python(model_field, value)


def to_python(model_field: Field[Any, Any], value: Any) -> Any:
    """Return value as the field's Python type, datetimes made aware (UTC)."""
    if value is None:
        return None
    value = model_field.to_python(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@cache
def table_for(label: str) -> Table:
    """Return the Table of the model labelled like 'clusters.cluster'."""
    model = apps.get_model(label)
    fields = tuple(f for f in model._meta.concrete_fields if not f.primary_key)
    return Table(model, fields)


def absent(model_field: Field[Any, Any]) -> Any:
    """Return the value of a column a journaled row lacks: it was written by earlier code.

    The database default, as PostgreSQL gives a row inserted without the
    column (expand/contract: every added column has one or is nullable).
    """
    default = model_field.db_default
    if isinstance(default, Value):
        return default.value
    if default is NOT_PROVIDED or hasattr(default, "resolve_expression"):
        return None  # none, or computed by the database (Now()): not known here
    return default


def decode_sqlite_json(label: str, raw: str | None) -> dict[str, Any] | None:
    """Turn a row as a journal trigger wrote it (SQLite JSON) into Python values."""
    if raw is None:
        return None
    table = table_for(label)
    stored = json.loads(raw)
    return {f.attname: to_python(f, stored.get(f.column, absent(f))) for f in table.fields}


def decode_for_replay(label: str, raw: str | None) -> dict[str, Any] | None:
    """Decode a journaled row cheaply: values stay as SQLite gave them, uid a UUID.

    PostgreSQL casts them on the way in (see replay._write); only the uid
    and version take part in decisions, and they are exact here.
    """
    if raw is None:
        return None
    table = table_for(label)
    row = json.loads(raw)
    if table.keyed_by_column and row.keys() >= table.column_set:
        # Today's journal row: the decoded object is the row, but for its
        # local id, which PostgreSQL never takes.
        row.pop(table.model._meta.pk.column, None)
    else:
        row = {attname: row.get(column, gone) for attname, column, gone in table.layout}
    row["uid"] = uuid.UUID(row["uid"])
    return row


def array_literal(values: Iterable[Any]) -> str:
    """Return values as one PostgreSQL array literal, to cast to its type (%s::integer[]).

    Each element is double-quoted with its quotes and backslashes escaped, so
    any text reads back as it was. Cheaper than the driver's adaptation of a
    list element by element, for the thousands of values a replay batch
    looks up.
    """
    quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def json_rows(rows: list[dict[str, Any]]) -> str:
    """Return rows as one JSON array for Table.from_json_rows.

    Values PostgreSQL returned (datetimes, UUIDs, decimals) go as their
    text form, which their column's type reads back exactly.
    """
    return json.dumps(rows, default=str, separators=(",", ":"))
