#!/bin/bash
# First start of the primary (docker-entrypoint-initdb.d): a role the standby
# replicates as, with its password from a Docker secret, and the pg_hba line
# that lets it in over the network with scram-sha-256.
set -euo pipefail

password="$(tr -d '\r\n' < "${REPLICATION_PASSWORD_FILE:?}")"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=password="$password" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
