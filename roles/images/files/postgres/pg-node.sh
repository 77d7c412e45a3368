#!/bin/bash
# One PostgreSQL node of the repmgr cluster, run as postgres. Decides at every start whether
# this node bootstraps the cluster, clones from the current primary, rejoins it (pg_rewind),
# or carries on as the primary; then supervises PostgreSQL and repmgrd.
#
# Environment (set by the postgres_repmgr role):
#   PG_NODE_NAME        this node's service name, e.g. pg-1 (also its DNS name)
#   PG_NODE_ID          repmgr node id (1..n)
#   PG_NODES            space-separated service names of all nodes
#   PG_INITIAL_PRIMARY  the node that bootstraps an empty cluster
#   PG_APP_DATABASE / PG_APP_USER   pretix's database and its owner
set -euo pipefail

: "${PG_NODE_NAME:?}" "${PG_NODE_ID:?}" "${PG_NODES:?}" "${PG_INITIAL_PRIMARY:?}"
: "${PG_APP_DATABASE:=pretix}" "${PG_APP_USER:=pretix}"
SECRETS_DIR=${PG_SECRETS_DIR:-/run/secrets}
CONF=/etc/boxoffice/repmgr.conf
LOG_FIFO=/run/postgresql/log.fifo

log() { echo "pg-node[$PG_NODE_NAME]: $*" >&2; }

# Every start of PostgreSQL (by this script or by repmgr during follow/rejoin) logs into one
# FIFO drained to the container's stdout; repmgr reads its commands' output through pipes
# that close, so the postmaster must not inherit them as its log.
rm -f "$LOG_FIFO"; mkfifo -m 0600 "$LOG_FIFO"
cat <>"$LOG_FIFO" &

PG_CTL="pg_ctl -D $PGDATA -w -t 300"
cat >"$CONF" <<CONF
node_id=$PG_NODE_ID
node_name='$PG_NODE_NAME'
conninfo='host=$PG_NODE_NAME port=5432 user=repmgr dbname=repmgr connect_timeout=2'
data_directory='$PGDATA'
pg_bindir='/usr/lib/postgresql/15/bin'
use_replication_slots=yes
log_level=INFO
log_status_interval=60
failover=automatic
promote_command='repmgr standby promote -f $CONF'
follow_command='repmgr standby follow -f $CONF --upstream-node-id=%n'
# 3 attempts 2 s apart plus the 2 s monitor interval: a lost primary is given up after ~8 s.
# A stopped dnsrr task's name stops resolving; repmgrd treats that as an unreachable node.
monitor_interval_secs=2
reconnect_attempts=3
reconnect_interval=2
# A standby that still sees the primary vetoes the promotion (protects against a partition).
primary_visibility_consensus=true
standby_disconnect_on_failover=true
service_start_command='$PG_CTL -l $LOG_FIFO start'
service_stop_command='$PG_CTL -m fast stop'
service_restart_command='$PG_CTL -m fast -l $LOG_FIFO restart'
service_reload_command='pg_ctl -D $PGDATA reload'
CONF

sql_peer() {  # sql_peer HOST SQL -> single value, or nothing when HOST is unreachable
  psql "host=$1 port=5432 user=repmgr dbname=repmgr connect_timeout=2" -XAtqc "$2" 2>/dev/null || true
}

find_other_primary() {
  local node
  for node in $PG_NODES; do
    [ "$node" = "$PG_NODE_NAME" ] && continue
    # A primary counts once repmgr has registered it (a clone needs the repmgr metadata).
    if [ "$(sql_peer "$node" "SELECT NOT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM repmgr.nodes WHERE type = 'primary' AND active)")" = "t" ]; then
      echo "$node"; return 0
    fi
  done
  return 1
}

wait_for_primary() {
  local primary
  until primary=$(find_other_primary); do
    log "waiting for a primary among: $PG_NODES"
    sleep 2
  done
  echo "$primary"
}

start_pg() { $PG_CTL -l "$LOG_FIFO" start >&2; }

# Swarm adds a task to DNS only once its healthcheck passes; repmgr reaches this node by name.
wait_for_own_dns() {
  until getent hosts "$PG_NODE_NAME" >/dev/null; do sleep 1; done
}

point_config_outside_datadir() {
  echo "include '/etc/boxoffice/postgresql.conf'" > "$PGDATA/postgresql.conf"
}

# Passwords are (re)applied on every primary start so that a rotated secret takes effect.
apply_roles() {
  psql -X -v ON_ERROR_STOP=1 -q -d postgres <<SQL
\\set postgres_pw \`cat $SECRETS_DIR/postgres_password\`
\\set repmgr_pw \`cat $SECRETS_DIR/repmgr_password\`
\\set pgpool_pw \`cat $SECRETS_DIR/pgpool_password\`
\\set app_pw \`cat $SECRETS_DIR/pretix_password\`
\\set app_user $PG_APP_USER
\\set app_db $PG_APP_DATABASE
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['repmgr', 'pgpool', :'app_user']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \\gexec
ALTER ROLE postgres PASSWORD :'postgres_pw';
-- repmgr needs superuser for pg_rewind, promote and follow.
ALTER ROLE repmgr SUPERUSER REPLICATION PASSWORD :'repmgr_pw';
-- pgpool only checks health and replication state.
ALTER ROLE pgpool NOSUPERUSER PASSWORD :'pgpool_pw';
GRANT pg_monitor TO pgpool;
ALTER ROLE :"app_user" NOSUPERUSER NOCREATEROLE PASSWORD :'app_pw';
SELECT 'CREATE DATABASE repmgr OWNER repmgr'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'repmgr') \\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'app_db') \\gexec
SQL
}

ensure_clean_shutdown() {
  local state
  state=$(pg_controldata "$PGDATA" | sed -n 's/^Database cluster state: *//p')
  case "$state" in
    "shut down"|"shut down in recovery") ;;
    *)
      # pg_rewind and repmgr node rejoin refuse a crashed data directory: run crash recovery
      # once without accepting connections, as the role it had.
      log "data directory state '$state': running recovery before rejoin"
      if [ -f "$PGDATA/standby.signal" ]; then
        start_pg; $PG_CTL -m fast stop >&2
      else
        postgres --single -D "$PGDATA" postgres </dev/null >&2
      fi
      ;;
  esac
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ "$PG_NODE_NAME" = "$PG_INITIAL_PRIMARY" ] && ! find_other_primary >/dev/null; then
    log "empty data directory, bootstrapping the cluster as primary"
    initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
      --data-checksums --encoding=UTF8 --locale=C.UTF-8 >&2
    point_config_outside_datadir
    start_pg
    apply_roles
    wait_for_own_dns
    repmgr -f "$CONF" primary register --force >&2
  else
    primary=$(wait_for_primary)
    log "empty data directory, cloning from primary $primary"
    rm -rf "${PGDATA:?}"/*
    repmgr -f "$CONF" -h "$primary" -U repmgr -d repmgr standby clone --fast-checkpoint >&2
    start_pg
    wait_for_own_dns
    repmgr -f "$CONF" standby register --force >&2
  fi
elif primary=$(find_other_primary); then
  # Another node is primary (a failover happened while this one was away, or this is a
  # standby restarting): never start as a second primary, rejoin and rewind if diverged.
  log "existing data, $primary is primary: rejoining as standby"
  ensure_clean_shutdown
  repmgr -f "$CONF" node rejoin -d "host=$primary port=5432 user=repmgr dbname=repmgr" \
    --force-rewind --verbose >&2
elif [ -f "$PGDATA/standby.signal" ]; then
  primary=$(wait_for_primary)
  log "standby data, primary $primary appeared: rejoining"
  ensure_clean_shutdown
  repmgr -f "$CONF" node rejoin -d "host=$primary port=5432 user=repmgr dbname=repmgr" \
    --force-rewind --verbose >&2
else
  log "existing primary data and no other primary reachable: starting as primary"
  start_pg
  apply_roles
  wait_for_own_dns
  repmgr -f "$CONF" primary register --force >&2
fi

repmgrd -f "$CONF" --daemonize=false &
repmgrd_pid=$!

shutdown() {
  log "stopping"
  kill -TERM "$repmgrd_pid" 2>/dev/null || true
  $PG_CTL -m fast stop >&2 || true
  exit 0
}
trap shutdown TERM INT

# repmgrd restarts PostgreSQL itself during follow; the container lives as long as repmgrd.
wait "$repmgrd_pid" || true
log "repmgrd exited"
$PG_CTL -m fast stop >&2 || true
exit 1
