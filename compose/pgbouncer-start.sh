#!/bin/sh
# Write PgBouncer's auth file from the pg_password Docker secret, then run it.
set -eu
mkdir -p /tmp/pgbouncer
umask 077
printf '"%s" "%s"\n' "${PG_USER:-kindler}" "$(cat /run/secrets/pg_password)" > /tmp/pgbouncer/userlist.txt
exec pgbouncer /etc/pgbouncer/pgbouncer.ini
