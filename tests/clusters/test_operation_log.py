"""Writing an operation's output and outcome (clusters/operation_log.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.utils import timezone

from clusters.drivers import Command
from clusters.models import Cluster, OperationLog
from clusters.operation_log import LogWriter, Outcome, OutputBuffer, header, write_outcome
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation

pytestmark = pytest.mark.django_db(databases=BOTH)

MARKER = "\n[... 20000 characters of output omitted ...]\n"


def outcome_for(cluster: Cluster, log_uid: Any, **overrides: Any) -> Outcome:
    fields: dict[str, Any] = {
        "log_uid": log_uid,
        "cluster_uid": cluster.uid,
        "cluster_name": cluster.name,
        "operation": "create",
        "command": "k3d cluster create x",
        "started_at": timezone.now(),
        "status": "success",
        "output": "$ k3d cluster create x\ndone\n",
        "exit_code": 0,
    }
    fields.update(overrides)
    return Outcome(**fields)


def test_the_buffer_keeps_everything_under_the_limit() -> None:
    buffer = OutputBuffer("$ cmd\n", limit=100)
    buffer.append("one\n")
    buffer.append("two\n")
    assert buffer.text() == "$ cmd\none\ntwo\n"


def test_the_buffer_keeps_the_start_and_the_end_past_the_limit() -> None:
    buffer = OutputBuffer("$ cmd\n", limit=30_000)
    buffer.append("a" * 25_000)
    buffer.append("b" * 25_000)
    assert buffer.text() == "$ cmd\n" + "a" * 20_000 + MARKER + "b" * 10_000


def test_the_buffer_stays_within_the_limit_as_output_keeps_coming() -> None:
    buffer = OutputBuffer("", limit=30_000)
    for _ in range(10):
        buffer.append("c" * 9_000)
    assert buffer.text() == "c" * 20_000 + "\n[... 60000 characters of output omitted ...]\n" + (
        "c" * 10_000
    )


def test_header_shows_the_command_and_its_stdin() -> None:
    command = Command(("kind", "create", "cluster", "--config", "-"), stdin="kind: Cluster")
    assert header(command) == (
        "$ kind create cluster --config -\n# configuration given on stdin:\nkind: Cluster\n"
    )


def test_an_outcome_updates_the_log_and_the_cluster(alias: str) -> None:
    cluster = make_cluster(actual_state="creating")
    log = make_operation(cluster, status="running")
    write_outcome(alias, outcome_for(cluster, log.uid))
    saved = OperationLog.objects.get(pk=log.pk)
    assert (saved.status, saved.exit_code, saved.log_output) == (
        "success",
        0,
        "$ k3d cluster create x\ndone\n",
    )
    assert Cluster.objects.get(pk=cluster.pk).actual_state == "running"


def test_an_outcome_whose_log_this_database_lacks_inserts_it_with_its_uid(alias: str) -> None:
    cluster = make_cluster()
    uid = uuid.uuid4()
    write_outcome(alias, outcome_for(cluster, uid, status="failed", error="boom", exit_code=1))
    saved = OperationLog.objects.get(uid=uid)
    assert (saved.cluster_name, saved.operation, saved.status, saved.error_message) == (
        cluster.name,
        "create",
        "failed",
        "boom",
    )
    assert (
        Cluster.objects.get(pk=cluster.pk).actual_state,
        Cluster.objects.get(pk=cluster.pk).reconcile_error,
    ) == ("failed", "boom")


def test_a_successful_delete_removes_the_cluster_row(alias: str) -> None:
    cluster = make_cluster(desired_state="absent")
    log = make_operation(cluster, operation="delete", status="running")
    write_outcome(alias, outcome_for(cluster, log.uid, operation="delete"))
    assert not Cluster.objects.filter(pk=cluster.pk).exists()
    assert OperationLog.objects.get(pk=log.pk).status == "success"


def test_a_delete_of_a_cluster_asked_for_again_keeps_the_row(alias: str) -> None:
    cluster = make_cluster(desired_state="present", actual_state="deleting")
    log = make_operation(cluster, operation="delete", status="running")
    write_outcome(alias, outcome_for(cluster, log.uid, operation="delete"))
    assert Cluster.objects.get(pk=cluster.pk).actual_state == "absent"


def test_the_log_writer_saves_output_while_it_comes(alias: str, settings: Any) -> None:
    settings.KINDLER_LOG_FLUSH_INTERVAL = 0
    cluster = make_cluster()
    log = make_operation(cluster, status="running")
    writer = LogWriter(outcome_for(cluster, log.uid), OutputBuffer("$ x\n"), on_error=print)
    writer.feed("first line\n")
    assert OperationLog.objects.get(pk=log.pk).log_output == "$ x\nfirst line\n"


def test_the_log_writer_saves_at_most_every_flush_interval(alias: str, settings: Any) -> None:
    settings.KINDLER_LOG_FLUSH_INTERVAL = 3600
    cluster = make_cluster()
    log = make_operation(cluster, status="running", log_output="")
    writer = LogWriter(outcome_for(cluster, log.uid), OutputBuffer("$ x\n"), on_error=print)
    writer.feed("first line\n")
    assert OperationLog.objects.get(pk=log.pk).log_output == ""


def test_the_buffer_stores_output_without_terminal_escapes() -> None:
    buffer = OutputBuffer("$ k3d cluster create dev\n")
    buffer.append("\x1b[31mERRO\x1b[0m[0000] failed\x1b]0;pwned\x07\n\x9b2Jdone\r\n")
    assert buffer.text() == "$ k3d cluster create dev\nERRO[0000] failed\ndone\r\n"
