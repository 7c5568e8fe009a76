"""Plain-SQL access to a synced model's table, fast enough for bulk sync."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.apps import apps
from django.db.models import Field, Model


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
    def unique_names(self) -> list[str]:
        """Return the other unique columns (a cluster's name): insert/insert clashes."""
        return [f.attname for f in self.fields if f.unique and f.attname != "uid"]

    @property
    def exclusive(self) -> list[str]:
        """Return the columns whose values one row at most may hold, across all of them."""
        return list(getattr(self.model, "exclusive_fields", ()))

    @property
    def scope(self) -> str | None:
        """Return the column within whose values the exclusive ones are held once."""
        return getattr(self.model, "exclusive_scope", None)

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


def decode_sqlite_json(label: str, raw: str | None) -> dict[str, Any] | None:
    """Turn a row as a journal trigger wrote it (SQLite JSON) into Python values."""
    if raw is None:
        return None
    table = table_for(label)
    stored = json.loads(raw)
    return {f.attname: to_python(f, stored.get(f.column)) for f in table.fields}


def decode_for_replay(label: str, raw: str | None) -> dict[str, Any] | None:
    """Decode a journaled row cheaply: values stay as SQLite gave them, uid a UUID.

    PostgreSQL casts them on the way in (see replay._write); only the uid
    and version take part in decisions, and they are exact here.
    """
    if raw is None:
        return None
    stored = json.loads(raw)
    row = {f.attname: stored.get(f.column) for f in table_for(label).fields}
    row["uid"] = uuid.UUID(row["uid"])
    return row
