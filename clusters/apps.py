from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ClustersConfig(AppConfig):
    name = "clusters"
    verbose_name = "Clusters"

    def ready(self) -> None:
        # Imported here, not at the top: clusters.metrics uses the models,
        # which cannot be imported before the app registry is ready.
        # Connects the receiver that counts failed sign-ins.
        from clusters import portclaims, ratelimit  # noqa: F401
        from clusters.metrics import OperationsCollector, ReconcilersCollector
        from clusters.registry import reconcilers_section
        from kindler import metrics, sections

        metrics.register(OperationsCollector())
        metrics.register(ReconcilersCollector())
        sections.register(reconcilers_section)
        post_migrate.connect(portclaims.on_post_migrate, dispatch_uid="clusters.portclaims")
