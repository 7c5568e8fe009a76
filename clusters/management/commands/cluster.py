"""`manage.py cluster list|show|create|delete|start|stop`."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from clusters import lifecycle, placement
from clusters.drivers.base import strip_escapes
from clusters.models import Cluster, DesiredState, Provider
from clusters.serializers import cluster_to_dict
from clusters.validators import one_line
from kindler.commands import RoutineCommand
from kindler.db.failover.monitor import monitor
from kindler.db.failover.schema import OLDER

LIST_COLUMNS = (
    "name",
    "provider",
    "host",
    "http_port",
    "https_port",
    "pf_port",
    "node_port",
    "cluster_subnet",
    "desired_state",
    "actual_state",
)

PORT_FIELDS = ("http_port", "https_port", "pf_port", "node_port")


class Command(RoutineCommand):
    help = (
        "List, show, create and delete clusters in the inventory. Acts as an operator: "
        "whoever may run manage.py may change every cluster."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        listing = actions.add_parser("list", help="List every cluster.")
        listing.add_argument("--json", action="store_true", help="Print JSON.")
        show = actions.add_parser("show", help="Show one cluster.")
        show.add_argument("name")
        show.add_argument("--json", action="store_true", help="Print JSON.")
        create = actions.add_parser("create", help="Add a cluster that should exist.")
        create.add_argument("name")
        create.add_argument("--provider", choices=Provider.values, default=Provider.K3D)
        create.add_argument(
            "--host",
            default=None,
            help="The Docker host whose reconciler runs it (default: see docs/placement.md).",
        )
        # No argparse defaults: a port left out takes the model's default.
        for port in PORT_FIELDS:
            create.add_argument(f"--{port.replace('_', '-')}", type=int, dest=port)
        create.add_argument("--subnet", default="")
        delete = actions.add_parser("delete", help="Mark a cluster to be deleted.")
        delete.add_argument("name")
        start = actions.add_parser("start", help="Ask for a stopped cluster to run again.")
        start.add_argument("name")
        stop = actions.add_parser("stop", help="Ask for a cluster to be stopped (kept).")
        stop.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] not in ("list", "show") and monitor.upgrade_required():
            raise CommandError(OLDER)
        getattr(self, f"do_{options['action']}")(options)

    def do_list(self, options: dict[str, Any]) -> None:
        rows = [cluster_to_dict(cluster) for cluster in Cluster.objects.all()]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
        elif not rows:
            self.stdout.write("No clusters.")
        else:
            self.stdout.write(format_table(rows))

    def do_show(self, options: dict[str, Any]) -> None:
        data = cluster_to_dict(get_cluster(options["name"]))
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
            return
        width = max(len(key) for key in data)
        for key, value in data.items():
            # Rows written before escapes were removed on the way in may hold some.
            text = "" if value is None else strip_escapes(str(value))
            self.stdout.write(f"{key:<{width}}  {text}")

    def do_create(self, options: dict[str, Any]) -> None:
        try:
            cluster, _ = lifecycle.request_create(
                name=options["name"],
                provider=options["provider"],
                host=options["host"],
                subnet=options["subnet"],
                **{port: options[port] for port in PORT_FIELDS if options[port] is not None},
            )
        except lifecycle.TooManyClusters as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        waiting = placement.waiting_message(cluster.host)
        if waiting:
            self.stdout.write(f"Cluster {cluster.name} added on {cluster.host}. {waiting}")
        else:
            self.stdout.write(
                f"Cluster {cluster.name} added on {cluster.host}; its reconciler will create it."
            )

    def do_delete(self, options: dict[str, Any]) -> None:
        cluster = get_cluster(options["name"])
        try:
            lifecycle.request_delete(cluster)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        self.stdout.write(f"Cluster {cluster.name} marked for deletion.")

    def do_start(self, options: dict[str, Any]) -> None:
        task = lifecycle.request_start(get_startable(options["name"]))
        self.stdout.write(f"Cluster {options['name']} will be started (operation {task.uid}).")

    def do_stop(self, options: dict[str, Any]) -> None:
        task = lifecycle.request_stop(get_startable(options["name"]))
        self.stdout.write(f"Cluster {options['name']} will be stopped (operation {task.uid}).")


def get_cluster(name: str) -> Cluster:
    """Return the named cluster or fail with a message a person can act on."""
    try:
        return Cluster.objects.get(name=name)
    except Cluster.DoesNotExist:
        raise CommandError(f"No cluster named {name}.") from None


def get_startable(name: str) -> Cluster:
    """Return the named cluster unless it is marked for deletion (starting it would cancel that)."""
    cluster = get_cluster(name)
    if cluster.desired_state == DesiredState.ABSENT:
        raise CommandError(f"Cluster {name} is marked for deletion.")
    return cluster


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return rows as a plain aligned table with a header."""
    header = [column.upper() for column in LIST_COLUMNS]
    cells = [[("-" if row[c] is None else str(row[c])) for c in LIST_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    )
