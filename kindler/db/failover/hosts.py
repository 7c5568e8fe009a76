"""The PostgreSQL servers Kindler may write to: PG_HOST and PG_PORT as libpq lists.

`PG_HOST=db1,db2 PG_PORT=5432,5433` names a primary and its standby (or
any number of servers); libpq, with target_session_attrs=read-write, connects
to the first of them that accepts writes, so a promoted standby takes the
writes without a change of settings. The settings import this module, so it
reads settings only inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from kindler.db import POSTGRES


@dataclass(frozen=True)
class Host:
    """One listed PostgreSQL server."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """Return host:port, with an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_hosts(hosts: str, ports: str) -> tuple[Host, ...]:
    """Return the servers of a libpq host list and its port list (one port, or one per host)."""
    names = [name.strip() for name in str(hosts).split(",")]
    numbers = [number.strip() for number in str(ports).split(",")]
    if not all(names):
        raise ImproperlyConfigured(f"PG_HOST has an empty entry: {hosts!r}")
    if len(numbers) == 1:
        numbers *= len(names)
    if len(numbers) != len(names):
        raise ImproperlyConfigured(
            f"PG_PORT lists {len(numbers)} ports for {len(names)} hosts in PG_HOST: "
            "give one port for all, or one per host"
        )
    servers = []
    for name, number in zip(names, numbers, strict=True):
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise ImproperlyConfigured(f"PG_PORT has an invalid port: {number!r}")
        servers.append(Host(name, int(number)))
    return tuple(servers)


def configured_hosts() -> tuple[Host, ...]:
    """Return the servers the postgres alias lists (none when PG_HOST is unset)."""
    db = settings.DATABASES.get(POSTGRES)
    if db is None:
        return ()
    return parse_hosts(str(db["HOST"]), str(db["PORT"] or 5432))
