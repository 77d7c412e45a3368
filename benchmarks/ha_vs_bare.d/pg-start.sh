#!/bin/sh
# Throwaway benchmark database: trust auth on the private network only.
set -eu
D=/var/lib/postgresql/bench
if [ ! -s "$D/PG_VERSION" ]; then
  install -d -o postgres -g postgres "$D"
  su postgres -c "/usr/lib/postgresql/15/bin/initdb -D $D -A trust -U postgres -E UTF8 --locale=C.UTF-8" >/dev/null
  echo "host all all 0.0.0.0/0 trust" >> "$D/pg_hba.conf"
fi
exec su postgres -c "/usr/lib/postgresql/15/bin/postgres -D $D -c listen_addresses='*' -c max_connections=200"
