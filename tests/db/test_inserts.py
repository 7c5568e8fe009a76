"""One-row INSERTs built once per model and columns, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from django.db.models import Value
from django.db.models.functions import Upper
from django.db.models.sql import compiler

from clusters.models import Cluster, OperationLog
from kindler.db.backends import inserts
from tests.conftest import BOTH
from tests.factories import cluster_fields

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Start with no statement kept; return the table of each INSERT the ORM builds."""
    monkeypatch.setattr(inserts, "_statements", {})
    built: list[str] = []
    django_as_sql = compiler.SQLInsertCompiler.as_sql

    def as_sql(self: compiler.SQLInsertCompiler) -> Any:
        built.append(self.query.get_meta().db_table)
        return django_as_sql(self)

    monkeypatch.setattr(compiler.SQLInsertCompiler, "as_sql", as_sql)
    return built


def rows(alias: str) -> list[tuple[Any, ...]]:
    operations = OperationLog.objects.using(alias).order_by("id")
    return list(operations.values_list("uid", "cluster_name", "operation", "created_at"))


def test_the_second_insert_of_a_model_reuses_the_first_ones_statement(
    alias: str, builds: list[str]
) -> None:
    for name in ("dev", "uat", "prod"):
        Cluster(**cluster_fields(name=name)).save(using=alias)
        OperationLog(cluster_name=name, operation="create").save(using=alias)
    assert builds == ["clusters_cluster", "clusters_operationlog"]


def test_a_reused_statement_stores_each_rows_own_values(alias: str, builds: list[str]) -> None:
    first = OperationLog(cluster_name="dev", operation="create")
    first.save(using=alias)
    second = OperationLog(cluster_name="uat", operation="delete")
    second.save(using=alias)
    assert (builds, rows(alias)) == (
        ["clusters_operationlog"],
        [
            (first.uid, "dev", "create", first.created_at),
            (second.uid, "uat", "delete", second.created_at),
        ],
    )


def test_an_expression_as_a_value_is_built_by_the_orm(alias: str, builds: list[str]) -> None:
    OperationLog(cluster_name="dev", operation="create").save(using=alias)
    # bulk_create asks for the same columns back as save() does, with an expression too.
    computed = OperationLog(cluster_name=Upper(Value("uat")), operation="create")
    OperationLog.objects.using(alias).bulk_create([computed])
    OperationLog(cluster_name="prod", operation="create").save(using=alias)
    assert (builds, [row[1] for row in rows(alias)]) == (
        ["clusters_operationlog"] * 2,
        ["dev", "UAT", "prod"],
    )
