# Functions shared by pg-node.sh and pg-promotion-check.sh (sourced, run as postgres).
# Peers are asked over SQL as repmgr; an unreachable peer answers nothing.

: "${PG_NODE_NAME:?}" "${PG_NODES:?}"

log() { echo "pg-node[$PG_NODE_NAME]: $*" >&2; }

# Writes made by this script and repmgr (roles, repmgr metadata) must not wait for a
# synchronous standby: the first primary has none, and a rejoining node registers itself
# before it streams.
export PGOPTIONS='-c synchronous_commit=local'
export PGCONNECT_TIMEOUT=2

# "<role> <timeline> <lsn>" of a running server; role is primary or standby. A standby's
# timeline is the newest it has received or replayed to.
STATE_SQL="SELECT CASE WHEN pg_is_in_recovery() THEN 'standby ' || greatest(
    coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0),
    (SELECT timeline_id FROM pg_control_checkpoint()),
    (SELECT min_recovery_end_timeline FROM pg_control_recovery()))
    || ' ' || greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0'))
  ELSE 'primary ' || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
    || ' ' || pg_current_wal_lsn() END"

sql_peer() {  # sql_peer HOST SQL -> the answer, or nothing when HOST is unreachable
  psql "host=$1 port=5432 user=repmgr dbname=repmgr" -XAtqc "$2" 2>/dev/null || true
}

sql_local() {
  psql -X -d repmgr -Atqc "$1" 2>/dev/null || true
}

peer_state() { sql_peer "$1" "$STATE_SQL"; }

# Prints "<node> <timeline>" of the primary on the newest timeline among the other nodes that
# repmgr has registered as primary. Two primaries can only coexist for a moment after a
# promotion; the older timeline is the stale one.
find_other_primary() {
  local node answer best="" best_tl=0 role tl
  for node in $PG_NODES; do
    [ "$node" = "$PG_NODE_NAME" ] && continue
    answer=$(sql_peer "$node" "SELECT ($STATE_SQL) WHERE EXISTS (SELECT 1 FROM repmgr.nodes WHERE type = 'primary' AND active)")
    read -r role tl _ <<<"$answer" || true
    if [ "$role" = primary ] && [ "$tl" -gt "$best_tl" ]; then
      best=$node best_tl=$tl
    fi
  done
  [ -n "$best" ] && echo "$best $best_tl"
}

# Highest timeline any reachable other node is on (0 when none answers).
peers_max_timeline() {
  local node tl max=0
  for node in $PG_NODES; do
    [ "$node" = "$PG_NODE_NAME" ] && continue
    read -r _ tl _ <<<"$(peer_state "$node")" || true
    [ -n "$tl" ] && [ "$tl" -gt "$max" ] && max=$tl
  done
  echo "$max"
}
