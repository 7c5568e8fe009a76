"""The throwaway PostgreSQL of tests/pgserver.py: made from a shared initdb, and known alive."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from tests.pgserver import PostgresServer

pytestmark = pytest.mark.postgres


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    made = PostgresServer()
    made.init()
    yield made
    made.destroy()


def test_servers_are_copies_of_one_initdb(server: PostgresServer) -> None:
    other = PostgresServer()
    try:
        other.init()
        assert other.template() == server.template()
        # pg_control begins with initdb's system identifier: copies share it.
        assert (other.datadir / "global" / "pg_control").read_bytes()[:8] == (
            server.datadir / "global" / "pg_control"
        ).read_bytes()[:8]
        assert other.datadir.stat().st_mode & 0o777 == 0o700
    finally:
        other.destroy()


def test_a_copy_answers_with_the_password_over_tcp(server: PostgresServer) -> None:
    server.start()
    with psycopg2.connect(**server.connect_kwargs()) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT current_user, current_setting('port')::int")
        assert cursor.fetchone() == ("kindler", server.port)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(**{**server.connect_kwargs(), "password": "wrong"}).close()


def test_another_password_gets_another_template(server: PostgresServer) -> None:
    class Other(PostgresServer):
        password = "another-test-password"

    assert Other().template_folder() != server.template_folder()


def test_a_server_is_running_from_start_to_stop(server: PostgresServer) -> None:
    assert server.is_running() is False
    server.start()
    assert server.is_running() is True
    server.stop()
    assert server.is_running() is False


def test_a_paused_server_is_running(server: PostgresServer) -> None:
    server.start()
    server.pause()
    try:
        assert server.is_running() is True
    finally:
        server.resume()


def test_a_killed_server_is_not_running_and_is_brought_back(server: PostgresServer) -> None:
    server.start()
    server.kill()
    # kill -9 leaves postmaster.pid behind, naming a process that is gone.
    assert (server.datadir / "postmaster.pid").exists()
    assert server.is_running() is False
    server.ensure_running()
    assert server.is_running() is True
