"""Django's SQL compilers for PostgreSQL; one-row INSERTs are built once.

See kindler.db.backends.inserts.
"""

from __future__ import annotations

from django.db.backends.postgresql import compiler
from django.db.backends.postgresql.compiler import (
    SQLAggregateCompiler,
    SQLCompiler,
    SQLDeleteCompiler,
    SQLUpdateCompiler,
)

from kindler.db.backends.inserts import ReusedInsertCompiler

__all__ = [
    "SQLAggregateCompiler",
    "SQLCompiler",
    "SQLDeleteCompiler",
    "SQLInsertCompiler",
    "SQLUpdateCompiler",
]


class SQLInsertCompiler(ReusedInsertCompiler, compiler.SQLInsertCompiler):
    """PostgreSQL's INSERT compiler (UNNEST for many rows), one-row statements reused."""
