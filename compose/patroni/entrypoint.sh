#!/bin/sh
# Hand Patroni its passwords from Docker secrets (it reads no *_FILE variables).
set -eu
export PATRONI_SUPERUSER_PASSWORD="$(cat /run/secrets/pg_superuser_password)"
export PATRONI_REPLICATION_PASSWORD="$(cat /run/secrets/pg_replication_password)"
export PATRONI_REWIND_PASSWORD="$PATRONI_SUPERUSER_PASSWORD"
exec "$@"
