"""The reconciler: make each cluster's actual state what its desired state asks for.

One pass reads the inventory and the open operations, asks each provider
what it runs (one listing per provider, reused while nothing needs doing),
and for every cluster either records what it saw or runs the one operation
that moves it toward its desired state, streaming the command's output into
its OperationLog.

Claims. An operation is claimed in a short transaction: on PostgreSQL under a
per-cluster advisory lock, on SQLite under its single-writer lock (Kindler
opens SQLite transactions IMMEDIATE). Inside it the reconciler checks that the
cluster row is unchanged since this pass read it (an operation that ended
meanwhile wrote its state there), that none of its operations runs, and that
none started since this pass looked; then it marks the operation `running`.
That row is the claim every other reconciler respects, so one action never
runs twice. A running operation older than the timeout plus a grace period
belongs to a reconciler that died; the next claim marks it failed.

Outages. Every database error is caught. A lost PostgreSQL is reported to
the health monitor, which routes the next write to SQLite; the operation's
output and outcome are then written there (matched by uid), and an outcome
that cannot be written anywhere is kept in memory and retried each pass.

Placement. A reconciler acts only on the clusters of its Docker host
(KINDLER_HOST_NAME); requests about clusters of other hosts are left to
their reconcilers. With a Heartbeat it registers itself and keeps each fresh
listing of its providers in its registration, which the status API reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import (
    DatabaseError,
    IntegrityError,
    close_old_connections,
    connections,
    router,
    transaction,
)
from django.utils import timezone

from clusters import hooks, preflight
from clusters.drivers import Command, Driver, DriverError, driver_for
from clusters.drivers.base import last_line, not_found, run
from clusters.models import (
    ActualState,
    Cluster,
    DesiredState,
    Operation,
    OperationLog,
    OperationStatus,
)
from clusters.operation_log import (
    TARGET_STATE,
    LogWriter,
    Outcome,
    OutputBuffer,
    header,
    write_outcome,
)
from clusters.registry import Heartbeat, install_hint
from kindler.db.failover.errors import describe_error, is_postgres_outage, is_switched_back
from kindler.db.failover.monitor import report_outage

logger = logging.getLogger("kindler.reconciler")

# pg_advisory_xact_lock(namespace, hashtext(name)): the namespace keeps
# Kindler's locks apart from any other user of advisory locks.
LOCK_NAMESPACE = 0x4B494E44
STALE_GRACE_SECONDS = 60.0
OBSERVABLE = (ActualState.RUNNING, ActualState.STOPPED, ActualState.ABSENT)
WORKING_STATE: dict[str, str] = {
    Operation.CREATE: ActualState.CREATING,
    Operation.DELETE: ActualState.DELETING,
}
FITS_DESIRED: dict[str, tuple[str, ...]] = {
    DesiredState.PRESENT: (Operation.CREATE, Operation.START),
    DesiredState.STOPPED: (Operation.CREATE, Operation.STOP),
    DesiredState.ABSENT: (Operation.DELETE,),
}
# After these, the server node has an address (a new one, perhaps) to record.
ADDRESSED = (Operation.CREATE, Operation.START)
INTERRUPTED = "Interrupted: Kindler was stopped while the command ran."
ABANDONED = "Interrupted: the reconciler running it stopped before it finished."


def operation_timeout() -> float:
    return float(settings.KINDLER_OPERATION_TIMEOUT)


def backoff_seconds(failures: int) -> float:
    """Return how long to wait after the given number of consecutive failures."""
    base = float(settings.KINDLER_RECONCILE_BACKOFF)
    ceiling = float(settings.KINDLER_RECONCILE_BACKOFF_MAX)
    return float(min(ceiling, base * 2 ** max(0, failures - 1)))


def decide(desired: str, actual: str) -> str | None:
    """Return the operation that moves a cluster from actual toward desired, if any."""
    if desired == DesiredState.ABSENT:
        return None if actual == ActualState.ABSENT else Operation.DELETE
    if actual == ActualState.ABSENT:
        return Operation.CREATE
    if desired == DesiredState.PRESENT and actual == ActualState.STOPPED:
        return Operation.START
    if desired == DesiredState.STOPPED and actual == ActualState.RUNNING:
        return Operation.STOP
    return None


@dataclass
class Inventory:
    """What a pass knows before it asks the providers anything."""

    clusters: list[dict[str, Any]]
    pending: dict[str, list[dict[str, Any]]]
    busy: set[str]
    last_log_id: int
    # Clusters of other Docker hosts: their requests are not orphans.
    elsewhere: set[str] = field(default_factory=set)


@dataclass
class PassReport:
    lines: list[str] = field(default_factory=list)
    actions: int = 0
    database_error: str | None = None


class Reconciler:
    """Compare desired and actual state of every cluster and act on the difference."""

    def __init__(
        self,
        stop: threading.Event | None = None,
        host: str | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.stop = stop or threading.Event()
        self.host = host or (heartbeat.host if heartbeat else str(settings.KINDLER_HOST_NAME))
        self.heartbeat = heartbeat
        self.unwritten: list[Outcome] = []
        self._observed: tuple[float, dict[str, dict[str, Any] | str]] | None = None
        # The last listing failure logged per provider: a missing binary is logged once.
        self._listing_errors: dict[str, str] = {}

    def run_forever(self, interval: float, on_pass: Callable[[PassReport], None]) -> None:
        """Run passes every interval seconds until the stop event is set."""
        while not self.stop.is_set():
            try:
                # Drop connections a lost server left broken, as a request would.
                close_old_connections()
                on_pass(self.run_once())
            except Exception:
                # The loop must outlive any surprise: the next pass starts afresh.
                logger.exception("Reconcile pass failed")
            self.stop.wait(interval)

    def run_once(self) -> PassReport:
        """Run one pass over every cluster."""
        report = PassReport()
        self._retry_unwritten()
        try:
            # Inside the try: in PostgreSQL-only mode the router itself raises
            # while no PostgreSQL takes writes.
            alias = router.db_for_write(Cluster)
            self._adopt_unplaced(alias)
            inventory = self._read_inventory(alias)
        except DatabaseError as exc:
            report.database_error = self.database_error(exc)
            return report
        providers = {row["provider"] for row in inventory.clusters}
        observed, fresh = self._observation(providers)
        plans = self._plan(inventory, observed)
        if not fresh and (inventory.pending or any(action for _, _, action in plans)):
            # Act only on what the providers say now, never on a remembered listing.
            observed, fresh = self._observation(providers, refresh=True)
            plans = self._plan(inventory, observed)
        try:
            self._close_orphans(alias, inventory)
            for row, actual, action in plans:
                if self.stop.is_set():
                    break
                if action is not None:
                    self._attempt(alias, row, action, actual, inventory, report)
                elif fresh:
                    self._settle_safely(alias, row, str(actual), inventory)
        except DatabaseError as exc:
            report.database_error = self.database_error(exc)
        return report

    def _observation(
        self, providers: set[str], refresh: bool = False
    ) -> tuple[dict[str, dict[str, Any] | str], bool]:
        """Return the providers' listings, and whether they were taken just now.

        While nothing needs doing, a listing is reused for
        KINDLER_OBSERVE_INTERVAL seconds, so an idle pass costs no process.
        """
        ttl = float(settings.KINDLER_OBSERVE_INTERVAL)
        cached = self._observed
        if (
            not refresh
            and cached is not None
            and time.monotonic() - cached[0] < ttl
            and providers <= cached[1].keys()
        ):
            return cached[1], False
        observed = self._observe(providers)
        self._observed = (time.monotonic(), observed)
        if self.heartbeat is not None:
            self.heartbeat.record_observation(observed)
        return observed, True

    def database_error(self, exc: DatabaseError) -> str:
        """Handle a database error without stopping: report a lost PostgreSQL, log the rest."""
        message = describe_error(exc)
        if report_outage(exc, "reconciler"):
            logger.warning("PostgreSQL went away during reconcile (%s); going on", message)
        elif is_switched_back(exc):
            logger.info("The instance went back to PostgreSQL; the next pass goes on there")
        else:
            logger.error("Database error during reconcile: %s", message)
        return message

    def _adopt_unplaced(self, alias: str) -> None:
        """Place clusters that have no Docker host (made before placement) on this one.

        Until placement existed one reconciler ran them all: the first that
        runs now takes them. One whose ports another cluster here holds
        stays unplaced, and is logged.
        """
        unplaced = Cluster.objects.using(alias).filter(host="")
        for pk, name in unplaced.values_list("pk", "name"):
            try:
                with transaction.atomic(using=alias):
                    unplaced.filter(pk=pk).update(host=self.host)
            except IntegrityError:
                logger.warning(
                    "Cannot place %s on %s: another cluster there holds one of its ports",
                    name,
                    self.host,
                )
            else:
                logger.info("Placed %s, which had no Docker host, on %s", name, self.host)

    def _read_inventory(self, alias: str) -> Inventory:
        logs = OperationLog.objects.using(alias)
        last_log_id = logs.order_by("-id").values_list("id", flat=True).first() or 0
        pending: dict[str, list[dict[str, Any]]] = {}
        busy: set[str] = set()
        stale_before = timezone.now() - self._stale_after()
        open_logs = logs.filter(status__in=[OperationStatus.PENDING, OperationStatus.RUNNING])
        for entry in open_logs.order_by("created_at", "id").values(
            "id", "cluster_name", "operation", "status", "started_at", "created_at"
        ):
            if entry["status"] == OperationStatus.PENDING:
                pending.setdefault(entry["cluster_name"], []).append(dict(entry))
            elif entry["started_at"] is None or entry["started_at"] > stale_before:
                busy.add(entry["cluster_name"])
        everywhere = Cluster.objects.using(alias)
        elsewhere = set(everywhere.exclude(host=self.host).values_list("name", flat=True))
        clusters = list(
            everywhere.filter(host=self.host).values(
                "id",
                "uid",
                "version",
                "name",
                "provider",
                "desired_state",
                "actual_state",
                "reconcile_error",
            )
        )
        return Inventory(clusters, pending, busy, last_log_id, elsewhere)

    def _observe(self, providers: set[str]) -> dict[str, dict[str, Any] | str]:
        """Ask every provider (in parallel) what it runs; a failure becomes its message."""
        if not providers:
            return {}
        with ThreadPoolExecutor(max_workers=len(providers)) as pool:
            observed = dict(
                zip(sorted(providers), pool.map(observe, sorted(providers)), strict=True)
            )
        for provider, listing in observed.items():
            error = listing if isinstance(listing, str) else ""
            if error and self._listing_errors.get(provider) != error:
                logger.warning("Cannot list %s clusters: %s", provider, error)
            elif not error and self._listing_errors.get(provider):
                logger.info("%s lists its clusters again", provider)
            self._listing_errors[provider] = error
        return observed

    def _plan(
        self, inventory: Inventory, observed: dict[str, dict[str, Any] | str]
    ) -> list[tuple[dict[str, Any], str | None, str | None]]:
        """Return (cluster row, actual state, operation to run) for every idle cluster."""
        plans = []
        for row in inventory.clusters:
            name = row["name"]
            if name in inventory.busy:
                continue
            seen = observed.get(row["provider"])
            if isinstance(seen, dict):
                actual: str | None = seen[name].state if name in seen else ActualState.ABSENT
            else:
                actual = row["actual_state"] if row["actual_state"] in OBSERVABLE else None
            if actual is not None:
                action = decide(row["desired_state"], actual)
            else:
                action = self._guess(row, inventory.pending.get(name, []))
            plans.append((row, actual, action))
        return plans

    def _attempt(
        self,
        alias: str,
        row: dict[str, Any],
        action: str,
        actual: str | None,
        inventory: Inventory,
        report: PassReport,
    ) -> None:
        if self._due(alias, row["name"], inventory.pending.get(row["name"], [])):
            self._observed = None  # what the providers run is about to change
            self._act(alias, row, action, actual, inventory, report)

    def _settle_safely(
        self, alias: str, row: dict[str, Any], actual: str, inventory: Inventory
    ) -> None:
        try:
            self._settle(alias, row, actual, inventory.pending.get(row["name"], []))
        except ValidationError as exc:  # a protected cluster marked absent
            logger.warning("Cannot remove %s: %s", row["name"], " ".join(exc.messages))

    @staticmethod
    def _guess(row: dict[str, Any], pending: list[dict[str, Any]]) -> str:
        # The provider cannot be asked (binary missing, Docker down): act on
        # the request people made; the attempt will say what is wrong.
        fitting = FITS_DESIRED[row["desired_state"]]
        for entry in pending:
            if entry["operation"] in fitting:
                return str(entry["operation"])
        return str(fitting[0])

    def _settle(self, alias: str, row: dict[str, Any], actual: str, pending: list[Any]) -> None:
        """Record a cluster that needs nothing: its state, and close requests about it."""
        now = timezone.now()
        if row["desired_state"] == DesiredState.ABSENT:
            with transaction.atomic(using=alias):
                Cluster.objects.using(alias).filter(
                    pk=row["id"], desired_state=DesiredState.ABSENT
                ).delete()
                self._close(alias, pending, actual, now)
            return
        changes: dict[str, Any] = {}
        if row["actual_state"] != actual:
            changes["actual_state"] = actual
        if row["reconcile_error"]:
            changes["reconcile_error"] = ""
        if changes or pending:
            with transaction.atomic(using=alias):
                if changes:
                    Cluster.objects.using(alias).filter(pk=row["id"]).update(
                        last_reconciled_at=now, **changes
                    )
                self._close(alias, pending, actual, now)

    @staticmethod
    def _close(alias: str, pending: list[dict[str, Any]], actual: str, now: datetime) -> None:
        for entry in pending:
            logs = OperationLog.objects.using(alias).filter(
                pk=entry["id"], status=OperationStatus.PENDING
            )
            if TARGET_STATE.get(entry["operation"]) == actual:
                logs.update(
                    status=OperationStatus.SUCCESS,
                    log_output=f"Nothing to run: {entry['cluster_name']} is already {actual}.",
                    completed_at=now,
                )
            else:
                logs.update(
                    status=OperationStatus.FAILED,
                    error_message=f"Superseded by a later request; the cluster is {actual}.",
                    completed_at=now,
                )

    def _close_orphans(self, alias: str, inventory: Inventory) -> None:
        names = {row["name"] for row in inventory.clusters} | inventory.elsewhere
        orphans = [
            pk
            for name, entries in inventory.pending.items()
            if name not in names
            for pk in (entry["id"] for entry in entries)
        ]
        if orphans:
            OperationLog.objects.using(alias).filter(
                pk__in=orphans, status=OperationStatus.PENDING
            ).update(
                status=OperationStatus.FAILED,
                error_message="The cluster is no longer in the inventory.",
                completed_at=timezone.now(),
            )

    def _due(self, alias: str, name: str, pending: list[dict[str, Any]]) -> bool:
        """Return False while the cluster waits out the backoff after failed attempts."""
        recent = (
            OperationLog.objects.using(alias)
            .filter(cluster_name=name, started_at__isnull=False)
            .exclude(status__in=[OperationStatus.PENDING, OperationStatus.RUNNING])
            .order_by("-started_at", "-id")
            .values("status", "completed_at")[:20]
        )
        failures = 0
        last_failure: datetime | None = None
        for entry in recent:
            if entry["status"] not in (OperationStatus.FAILED, OperationStatus.TIMEOUT):
                break
            failures += 1
            last_failure = last_failure or entry["completed_at"]
        if not failures or last_failure is None:
            return True
        # A request made after the last failure is a person asking again: now.
        if any(entry["created_at"] > last_failure for entry in pending):
            return True
        return timezone.now() >= last_failure + timedelta(seconds=backoff_seconds(failures))

    def _act(
        self,
        alias: str,
        row: dict[str, Any],
        action: str,
        actual: str | None,
        inventory: Inventory,
        report: PassReport,
    ) -> None:
        cluster = Cluster.objects.using(alias).filter(pk=row["id"]).first()
        if cluster is None or cluster.desired_state != row["desired_state"]:
            return  # changed since this pass looked: the next pass decides afresh
        driver = driver_for(cluster.provider)
        timeout = operation_timeout()
        command = driver.command_for(action, cluster, timeout)
        outcome = self._claim(alias, cluster, row["version"], action, command, inventory)
        if outcome is None:
            return
        self._execute(cluster, driver, command, outcome, actual, timeout)
        self._save(outcome)
        report.actions += 1
        took = (outcome.completed_at - outcome.started_at).total_seconds()
        line = f"{action} {cluster.name}: {outcome.status} in {took:.1f} s"
        report.lines.append(line + (f" ({outcome.error})" if outcome.error else ""))
        logger.info("%s", report.lines[-1])

    def _claim(
        self,
        alias: str,
        cluster: Cluster,
        version: int,
        action: str,
        command: Command,
        inventory: Inventory,
    ) -> Outcome | None:
        """Mark the action's operation running, unless someone else acted or acts on it.

        Skipped when the cluster row changed since this pass read it (an
        action that ended meanwhile wrote its state there), when one of its
        operations runs, or when one was started since this pass looked.
        """
        now = timezone.now()
        with transaction.atomic(using=alias):
            lock_cluster(alias, cluster.name)
            current = Cluster.objects.using(alias).filter(pk=cluster.pk)
            if not current.filter(version=version).exists():
                return None
            logs = OperationLog.objects.using(alias).filter(cluster_name=cluster.name)
            for running in logs.filter(status=OperationStatus.RUNNING):
                if running.started_at and running.started_at > now - self._stale_after():
                    return None
                logs.filter(pk=running.pk).update(
                    status=OperationStatus.FAILED, error_message=ABANDONED, completed_at=now
                )
            finished = logs.filter(id__gt=inventory.last_log_id)
            if finished.exclude(status=OperationStatus.PENDING).exists():
                return None
            pending = list(
                logs.filter(status=OperationStatus.PENDING, operation=action).order_by(
                    "created_at", "id"
                )
            )
            log = pending[0] if pending else OperationLog(cluster_name=cluster.name)
            log.operation = action
            log.status = OperationStatus.RUNNING
            log.command = command.display()
            log.started_at = now
            log.log_output = header(command)
            log.save(using=alias)
            for extra in pending[1:]:
                logs.filter(pk=extra.pk).update(
                    status=OperationStatus.FAILED,
                    error_message=f"Superseded by operation {log.uid}, which ran instead.",
                    completed_at=now,
                )
            if action in WORKING_STATE:
                current.update(actual_state=WORKING_STATE[action])
        return Outcome(
            log_uid=log.uid,
            cluster_uid=cluster.uid,
            cluster_name=cluster.name,
            operation=action,
            command=log.command,
            started_at=now,
            status=OperationStatus.RUNNING,
            output=log.log_output,
        )

    def _execute(
        self,
        cluster: Cluster,
        driver: Driver,
        command: Command,
        outcome: Outcome,
        actual: str | None,
        timeout: float,
    ) -> None:
        """Run the command (after the preflight, for a create) and fill in the outcome."""
        if outcome.operation == Operation.CREATE:
            exists = actual is not None and actual != ActualState.ABSENT
            try:
                preflight.check_create(cluster, exists=exists)
            except ValidationError as exc:
                outcome.status, outcome.error = (
                    OperationStatus.FAILED,
                    preflight.failure_message(exc),
                )
                outcome.completed_at = timezone.now()
                return
        buffer = OutputBuffer(outcome.output)
        writer = LogWriter(outcome, buffer, on_error=self.database_error)
        result = run(command, timeout=timeout, on_output=writer.feed, should_stop=self.stop.is_set)
        outcome.output = buffer.text()
        outcome.exit_code = result.exit_code
        outcome.completed_at = timezone.now()
        if result.ok:
            outcome.status = OperationStatus.SUCCESS
            if outcome.operation in ADDRESSED:
                outcome.server_ip = server_address(driver, cluster.name, writer.feed)
                # The hooks get the address the cluster has now.
                cluster.server_ip = outcome.server_ip or cluster.server_ip
            state, stop = TARGET_STATE[outcome.operation], self.stop.is_set
            outcome.hooks = hooks.run_hooks(cluster, outcome.operation, state, writer.feed, stop)
            outcome.output = buffer.text()
        elif result.missing:
            outcome.status = OperationStatus.FAILED
            outcome.error = f"{not_found(command.binary)}; {install_hint(cluster.provider)}"
        elif result.timed_out:
            outcome.status = OperationStatus.TIMEOUT
            outcome.error = (
                f"Timed out after {timeout:g} s; the command and everything it started were killed."
            )
        elif result.interrupted:
            outcome.status, outcome.error = OperationStatus.FAILED, INTERRUPTED
        else:
            detail = last_line(result.output)
            outcome.status = OperationStatus.FAILED
            outcome.error = f"{command.binary} exited with status {result.exit_code}" + (
                f": {detail}" if detail else ""
            )

    def _save(self, outcome: Outcome) -> bool:
        """Write an outcome where writes go now; keep it for later if nowhere takes it."""
        for _attempt in range(2):
            alias = router.db_for_write(OperationLog)
            try:
                write_outcome(alias, outcome)
                return True
            except DatabaseError as exc:
                self.database_error(exc)
                # A lost PostgreSQL or a switch back to it: the next try goes
                # where writes go now.
                if not (is_postgres_outage(exc) or is_switched_back(exc)):
                    break
        self.unwritten.append(outcome)
        logger.error(
            "Kept the outcome of %s %s to write later", outcome.operation, outcome.cluster_name
        )
        return False

    def _retry_unwritten(self) -> None:
        waiting, self.unwritten = self.unwritten, []
        for outcome in waiting:
            self._save(outcome)

    @staticmethod
    def _stale_after() -> timedelta:
        # The hooks run while the operation is still claimed.
        budget = operation_timeout() + hooks.time_budget() + STALE_GRACE_SECONDS
        return timedelta(seconds=budget)


def observe(provider: str) -> dict[str, Any] | str:
    """Return a provider's clusters by name, or why it cannot list them."""
    try:
        return dict(driver_for(provider).list_clusters())
    except (DriverError, ValueError) as exc:
        return str(exc)


def server_address(driver: Driver, name: str, say: Callable[[str], None]) -> str | None:
    """Return the cluster's server node address, or None, saying in its log why there is none."""
    try:
        address = driver.server_ip(name)
    except DriverError as exc:
        say(f"Kindler could not read the server node's address: {exc}\n")
        return None
    if address is None:
        say("Kindler found no address on the server node.\n")
    return address


def lock_cluster(alias: str, name: str) -> None:
    """Serialise claims on one cluster until the transaction ends.

    PostgreSQL takes an advisory lock; SQLite needs nothing more, as Kindler
    opens its transactions IMMEDIATE: one writer at a time holds the file.
    """
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, name])
