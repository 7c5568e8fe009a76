#!/bin/sh
# Run once by Patroni on the node that creates the cluster: Kindler's role
# (password from the pg_password secret) and its database.
set -eu
user="${KINDLER_PG_USER:-kindler}"
database="${KINDLER_PG_DATABASE:-kindler}"
password="$(cat /run/secrets/pg_password)"
psql -v ON_ERROR_STOP=1 -v user="$user" -v password="$password" -d postgres <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"user" LOGIN PASSWORD :'password';
SQL
createdb -O "$user" "$database"
