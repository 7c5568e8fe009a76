"""What every row that is synced between PostgreSQL and SQLite carries."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models
from django.db.models import F


class SyncedQuerySet(models.QuerySet[Any]):
    """A queryset whose bulk updates bump every row's version, like save() does."""

    def update(self, **kwargs: Any) -> int:
        kwargs.setdefault("version", F("version") + 1)
        return super().update(**kwargs)


class SyncedModel(models.Model):
    """A row identified across databases by uid, with a version per save.

    Integer ids are local to each database and collide across them; uid is
    the same everywhere, and version says which copy is newer.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    version = models.PositiveBigIntegerField(default=0, editable=False)

    objects = SyncedQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "version"}
        super().save(*args, **kwargs)
