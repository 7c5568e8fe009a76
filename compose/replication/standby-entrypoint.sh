#!/bin/bash
# The standby's entrypoint: on the first start (empty data folder), clone the
# primary with pg_basebackup -R (which writes standby.signal and a
# primary_conninfo naming the passfile below), then hand over to the image's
# own entrypoint.
set -euo pipefail

# Written on every start (the container's home is not on the volume). A
# passfile, not PGPASSWORD: the password stays out of the environment and out
# of primary_conninfo.
passfile=/var/lib/postgresql/.pgpass
printf '%s:5432:replication:replicator:%s\n' "${PRIMARY_HOST:?}" \
    "$(tr -d '\r\n' < "${REPLICATION_PASSWORD_FILE:?}")" > "$passfile"
chown postgres:postgres "$passfile"
chmod 600 "$passfile"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    gosu postgres pg_basebackup \
        --dbname "host=$PRIMARY_HOST port=5432 user=replicator passfile=$passfile" \
        --pgdata "$PGDATA" --write-recovery-conf --wal-method stream --checkpoint fast
fi
exec docker-entrypoint.sh "$@"
