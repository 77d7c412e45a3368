#!/bin/bash
# Root part of the start: prepare ownership and credentials, then run the node as postgres.
# Passwords come only from Docker secrets (files), never from the environment.
set -euo pipefail

SECRETS_DIR=${PG_SECRETS_DIR:-/run/secrets}
for name in postgres_password repmgr_password pretix_password pgpool_password; do
  if [ ! -r "$SECRETS_DIR/$name" ]; then
    echo "entrypoint: secret $SECRETS_DIR/$name is missing or unreadable" >&2
    exit 1
  fi
done

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres /var/lib/postgresql/data "$PGDATA" /run/postgresql
chmod 0700 "$PGDATA"
# The pgBackRest repository (a volume of its own, see roles/backup) when archiving is on.
if [ -d /var/lib/pgbackrest ]; then chown postgres:postgres /var/lib/pgbackrest; fi

# repmgr, pg_rewind and the clone authenticate as repmgr over TCP; .pgpass keeps the password
# off command lines and out of repmgr.conf.
repmgr_pw=$(cat "$SECRETS_DIR/repmgr_password")
umask 077
printf '*:5432:*:repmgr:%s\n*:5432:replication:repmgr:%s\n' "$repmgr_pw" "$repmgr_pw" \
  > /var/lib/postgresql/.pgpass
chown postgres:postgres /var/lib/postgresql/.pgpass

exec env HOME=/var/lib/postgresql USER=postgres setpriv --reuid=postgres --regid=postgres --init-groups /usr/local/bin/pg-node.sh
