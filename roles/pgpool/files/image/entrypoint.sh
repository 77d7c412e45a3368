#!/bin/bash
# Builds pool_passwd from Docker secrets (pgpool needs the clear password to do SCRAM towards
# both the client and the backends) and runs pgpool in the foreground as postgres.
#
# PGPOOL_CONFIG    pgpool.conf (a Swarm config rendered by the pgpool role); it must set
#                  pool_passwd = '/etc/boxoffice/pool_passwd'.
# PGPOOL_HBA       pool_hba.conf
# PGPOOL_USERS     space-separated "user=secretfile" pairs, secret files under /run/secrets
set -euo pipefail

: "${PGPOOL_CONFIG:=/etc/boxoffice/pgpool.conf}" "${PGPOOL_HBA:=/etc/boxoffice/pool_hba.conf}"
: "${PGPOOL_USERS:?PGPOOL_USERS must list user=secret pairs}"

umask 077
passwd_file=/etc/boxoffice/pool_passwd
: > "$passwd_file"
for pair in $PGPOOL_USERS; do
  user=${pair%%=*} secret=/run/secrets/${pair#*=}
  if [ ! -r "$secret" ]; then
    echo "entrypoint: secret $secret for user $user is missing or unreadable" >&2
    exit 1
  fi
  printf '%s:TEXT%s\n' "$user" "$(cat "$secret")" >> "$passwd_file"
done
chown postgres:postgres "$passwd_file"

# -D: forget node states from a previous run; the health checks establish them afresh.
exec env HOME=/var/lib/postgresql USER=postgres setpriv --reuid=postgres --regid=postgres --init-groups \
  pgpool -n -D -f "$PGPOOL_CONFIG" -a "$PGPOOL_HBA" -F /etc/pgpool2/pcp.conf
