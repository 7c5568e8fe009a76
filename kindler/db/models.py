"""What every synced row carries, and the tables that carry rows across outages.

Journaling is done by SQLite triggers (see kindler/db/sync/journal.py), not here:
a trigger sees every write path at once (Model.save, QuerySet.update, bulk
and cascading deletes, bulk_create, raw SQL), runs inside the writing
transaction by construction, and has the row before and after the change
without an extra query. The model layer only keeps `version` moving.

Where each table lives:
- SQLite only: InstanceIdentity, JournalEntry, SyncRun, KnownDatabase, Tombstone,
  AcknowledgedVersion (per file).
- PostgreSQL only: AppliedEntry, Conflict, RowChange (shared by every instance).
Both aliases get every table from migrate; the unused copies stay empty.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import F
from django.dispatch import Signal

from kindler.db import POSTGRES

# Sent by SyncedQuerySet.update() on PostgreSQL, inside its transaction, with
# the primary keys it changed: no save() signal announces those rows, and the
# write-through (kindler.db.sync.writethrough) must copy them into SQLite too.
rows_updated = Signal()


class SyncedQuerySet(models.QuerySet[Any]):
    """A queryset whose bulk updates bump every row's version, like save() does."""

    def update(self, **kwargs: Any) -> int:
        kwargs.setdefault("version", F("version") + 1)
        if self.db != POSTGRES or not rows_updated.has_listeners(self.model):
            return super().update(**kwargs)
        # The rows are picked before the update: a filter on a field the
        # update changes would no longer find them afterwards.
        with transaction.atomic(using=self.db, savepoint=False):
            pks = list(self.values_list("pk", flat=True))
            count = super().update(**kwargs)
            if pks:
                rows_updated.send(sender=self.model, using=self.db, pks=pks)
        return count


class SyncedModel(models.Model):
    """A row identified across databases by uid, with a version per save.

    Integer ids are local to each database and collide across them; uid is
    the same everywhere, and version says which copy is newer.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    version = models.PositiveBigIntegerField(default=0, editable=False)

    objects = SyncedQuerySet.as_manager()

    # Columns whose values are held by one row at most, across all of them
    # (a cluster's host ports): the sync turns a change that would take a
    # value another row holds into a conflict, never a second holder.
    exclusive_fields: ClassVar[tuple[str, ...]] = ()
    # A column that partitions those values (a cluster's Docker host): rows
    # with different values in it may hold the same exclusive value.
    exclusive_scope: ClassVar[str | None] = None

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding:
            self.version += 1
        else:
            # Bumped by the database and read back (RETURNING), so a copy
            # loaded before someone else's save still writes a newer version.
            self.version = F("version") + 1  # type: ignore[assignment]
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "version"}
        super().save(*args, **kwargs)


class Op(models.TextChoices):
    INSERT = "insert", "insert"
    UPDATE = "update", "update"
    DELETE = "delete", "delete"


class InstanceIdentity(models.Model):
    """The one row naming this SQLite file's Kindler instance."""

    instance_id = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return str(self.instance_id)


class JournalEntry(models.Model):
    """One change made on SQLite while PostgreSQL was away; id is the sequence."""

    model = models.CharField(max_length=100)
    uid = models.CharField(max_length=36)
    op = models.CharField(max_length=8, choices=Op.choices)
    base_version = models.BigIntegerField(null=True)
    # NULL, not "", says there is no row: before an insert, after a delete.
    before = models.TextField(null=True)  # noqa: DJ001
    data = models.TextField(null=True)  # noqa: DJ001
    created_at = models.CharField(max_length=32)
    # The version of the code whose triggers wrote it ("" before 0.2.0). Its
    # rows lack the columns later migrations added; replay gives them the
    # columns' database defaults.
    schema = models.CharField(max_length=32, blank=True, default="", db_default="")

    class Meta:
        verbose_name_plural = "journal entries"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.op} {self.model} {self.uid}"


class AppliedEntry(models.Model):
    """Proof in PostgreSQL that a journal entry was replayed (exactly once)."""

    instance_id = models.UUIDField()
    seq = models.BigIntegerField()
    outcome = models.CharField(max_length=16)
    applied_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance_id", "seq"], name="kindler_db_applied_once")
        ]

    def __str__(self) -> str:
        return f"{self.instance_id}#{self.seq} {self.outcome}"


class ConflictKind(models.TextChoices):
    UPDATE_UPDATE = "update/update", "changed on both sides"
    INSERT_INSERT = "insert/insert", "created on both sides with one name"
    UPDATE_DELETE = "update/delete", "changed here, deleted in PostgreSQL"
    DELETE_UPDATE = "delete/update", "deleted here, changed in PostgreSQL"


class Resolution(models.TextChoices):
    REMOTE = "remote", "kept PostgreSQL's"
    LOCAL = "local", "applied local"


class Conflict(models.Model):
    """A replayed change PostgreSQL's row did not allow; both sides kept."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=ConflictKind.choices)
    model = models.CharField(max_length=100)
    row_uid = models.CharField(max_length=36, db_index=True)
    name = models.CharField(max_length=100, blank=True, default="")
    instance_id = models.UUIDField()
    seq = models.BigIntegerField()
    base = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    local = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    remote = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=8, choices=Resolution.choices, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} on {self.model} {self.name or self.row_uid}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class RowChange(models.Model):
    """The last change to each synced row in PostgreSQL, kept by a trigger.

    The mirror asks for changes committed since its last run (by transaction
    id), so an unchanged database costs one indexed query; deleted rows stay
    here as tombstones so deletes reach every SQLite file.
    """

    model = models.CharField(max_length=100)
    uid = models.UUIDField()
    deleted = models.BooleanField(default=False)
    # xid8 in PostgreSQL (see the migration); unused on SQLite.
    xid = models.BigIntegerField(null=True)
    # From a sequence on every change: only grows, unless the database was
    # restored from a dump (which carries the sequence's older value).
    position = models.BigIntegerField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "uid"], name="kindler_db_rowchange_once")
        ]
        indexes = [
            models.Index(fields=["xid"], name="kindler_db_rowchange_xid"),
            models.Index(fields=["position"], name="kindler_db_rowchange_position"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.uid}"


class SyncRun(models.Model):
    """One replay or mirror run of this instance; the last runs of each kind are kept."""

    kind = models.CharField(max_length=8, db_index=True)
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    result = models.TextField()
    duration_ms = models.FloatField()
    last_success_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.result}"


class DatabaseIdentity(models.Model):
    """The one row naming a PostgreSQL database, written by migrate.

    A dump carries it along; the database's OID and the server's system
    identifier (see kindler.db.sync.identity) tell a restored copy apart.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "database identities"

    def __str__(self) -> str:
        return str(self.uuid)


class KnownDatabase(models.Model):
    """The PostgreSQL this SQLite file last mirrored (one row), and how far.

    An identity that differs from this one, another node, timeline or start
    time, or a change log that went back, means PostgreSQL was replaced,
    restored or failed over: local rows are merged into it, never dropped.
    """

    database_uuid = models.UUIDField(null=True)
    system_identifier = models.BigIntegerField(null=True)
    database_oid = models.BigIntegerField(null=True)
    # The server's WAL timeline: a promoted standby (a failover) starts a new one.
    timeline = models.BigIntegerField(null=True)
    # The node that answered (inet_server_addr():port), to name a change of primary.
    server = models.CharField(max_length=100, blank=True, default="", db_default="")
    # When the server last started (pg_postmaster_start_time()): restoring an
    # older copy, or a crash that lost commits, needs a restart, and on the
    # same node and timeline the change log's position may not show it.
    started_at = models.DateTimeField(null=True)
    # The change log's sequence as last mirrored.
    position = models.BigIntegerField(default=0)
    # The mirror's high-water mark: PostgreSQL's snapshot xmin at its last run.
    mark = models.CharField(max_length=32, blank=True, default="")
    seen_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.database_uuid} at {self.position}"


class RestoredWhy(models.TextChoices):
    ADOPTED = "adopted", "adopted (new database)"
    RESTORED = "restored", "restored (PostgreSQL lacked it)"
    FAILOVER = "failover", "failover (the new primary lacked it)"
    DELETED = "deleted", "delete applied again (PostgreSQL had the row back)"


class RestoredRow(models.Model):
    """A local row PostgreSQL lacked (or held older) and got back from a SQLite file."""

    model = models.CharField(max_length=100)
    row_uid = models.CharField(max_length=36, db_index=True)
    name = models.CharField(max_length=100, blank=True, default="")
    why = models.CharField(max_length=8, choices=RestoredWhy.choices)
    instance_id = models.UUIDField()
    restored_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-restored_at", "-id"]

    def __str__(self) -> str:
        return f"{self.why} {self.model} {self.name or self.row_uid}"


class Tombstone(models.Model):
    """A synced row this SQLite file deleted or saw deleted (SQLite only), kept for a while.

    Written by a trigger on every delete, whatever the path (a delete made
    here, copied by the write-through or by the mirror), and dropped when a
    row with that uid is inserted again. When PostgreSQL comes back restored
    or from a failover that lost the delete, the row it holds again is
    deleted again (kindler.db.sync.carry). Kept KINDLER_TOMBSTONE_DAYS.
    """

    model = models.CharField(max_length=100)
    uid = models.CharField(max_length=36)
    version = models.BigIntegerField()
    deleted_at = models.CharField(max_length=32, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "uid"], name="kindler_db_tombstone_once")
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.uid} v{self.version}"


class AcknowledgedVersion(models.Model):
    """A version of a synced row this instance saved on PostgreSQL (SQLite only), kept a while.

    Written by the write-through copy with the row: the version, a digest of
    what a writer sets in it (empty when the save was partial and SQLite's
    copy may hold other columns older than PostgreSQL's) and the columns the
    save changed (empty for an insert). A merge after a failover or a
    restore tells from them whether PostgreSQL lacks a version this instance
    acknowledged although its version number differs (kindler.db.sync.carry).
    Kept KINDLER_TOMBSTONE_DAYS, the newest ACKNOWLEDGED_PER_ROW of each row.
    """

    model = models.CharField(max_length=100)
    uid = models.CharField(max_length=36)
    version = models.BigIntegerField()
    digest = models.CharField(max_length=64, blank=True)
    changed = models.TextField(blank=True)
    acknowledged_at = models.CharField(max_length=32, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["model", "uid"], name="kindler_db_ack_row")]

    def __str__(self) -> str:
        return f"{self.model} {self.uid} v{self.version}"
