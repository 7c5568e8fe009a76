"""Conflicts in the admin: both sides side by side, and a decision to make."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from kindler.db import POSTGRES
from kindler.db.failover.errors import describe_error
from kindler.db.failover.pinning import postgres_configured
from kindler.db.failover.routers import current_alias
from kindler.db.models import Conflict, Resolution, RestoredRow
from kindler.db.sync.conflicts import ResolutionError, resolve, side_by_side

UNREACHABLE = (
    "Conflicts are kept in PostgreSQL, which cannot be reached now; "
    "they are listed again once it is back."
)


class PostgresOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Admin for a table kept in PostgreSQL only, whatever the active database."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if not postgres_configured():
            return queryset
        if current_alias() != POSTGRES:
            return queryset.using(POSTGRES).none()
        return queryset.using(POSTGRES)


@admin.register(Conflict)
class ConflictAdmin(PostgresOnlyAdmin):
    list_display = ["name", "kind", "model", "created_at", "is_open", "resolution"]
    list_filter = ["kind", "resolution"]
    search_fields = ["name", "row_uid"]
    actions = ["keep_remote", "apply_local"]
    fields = ("uid", "kind", "model", "name", "row_uid", "instance_id", "seq", "sides")
    readonly_fields = fields

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        if postgres_configured() and current_alias() != POSTGRES:
            self.message_user(request, UNREACHABLE, messages.WARNING)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(boolean=True, description="open")
    def is_open(self, conflict: Conflict) -> bool:
        return conflict.is_open

    @admin.display(description="base / local / PostgreSQL")
    def sides(self, conflict: Conflict) -> str:
        rows = format_html_join(
            "",
            '<tr{}><th scope="row">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    format_html(' class="{}"', "conflict-differs") if local != remote else "",
                    name,
                    _shown(base),
                    _shown(local),
                    _shown(remote),
                )
                for name, base, local, remote in side_by_side(conflict)
            ),
        )
        return format_html(
            '<table class="conflict-sides"><thead><tr><th>field</th><th>base</th>'
            "<th>local (SQLite)</th><th>PostgreSQL</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.action(description="Keep PostgreSQL's", permissions=["change"])
    def keep_remote(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve(request, queryset, Resolution.REMOTE)

    @admin.action(description="Apply local", permissions=["change"])
    def apply_local(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve(request, queryset, Resolution.LOCAL)

    def _resolve(self, request: HttpRequest, queryset: QuerySet[Conflict], keep: str) -> None:
        done = 0
        for conflict in queryset.filter(resolved_at__isnull=True):
            try:
                resolve(conflict.uid, keep)
            except ResolutionError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            except DatabaseError as exc:
                self.message_user(request, f"Not resolved: {describe_error(exc)}", messages.ERROR)
                break
            done += 1
        self.message_user(request, f"Resolved {done} conflict(s).", messages.SUCCESS)


def _shown(value: Any) -> str:
    return "—" if value is None else str(value)


@admin.register(RestoredRow)
class RestoredRowAdmin(PostgresOnlyAdmin):
    """Rows a SQLite file gave back to PostgreSQL (adopted or restored): read only."""

    list_display = ["name", "model", "why", "restored_at", "row_uid", "instance_id"]
    list_filter = ["why", "model"]
    search_fields = ["name", "row_uid"]
    readonly_fields = ["model", "row_uid", "name", "why", "instance_id", "restored_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
