# shellcheck shell=bash
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
# The control file shows a new timeline only after the next checkpoint (or restartpoint), so
# the WAL segments it holds count too: a segment on timeline n exists only once this node was
# promoted to n or streamed from it.
STATE_SQL="SELECT CASE WHEN pg_is_in_recovery() THEN 'standby ' || greatest(
    coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0),
    (SELECT timeline_id FROM pg_control_checkpoint()),
    (SELECT min_recovery_end_timeline FROM pg_control_recovery()),
    coalesce((SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir()
      WHERE name ~ '^[0-9A-F]{24}\$'), 0))
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

lsn_value() {  # lsn_value 1A/2B3C -> a comparable integer
  echo $(( (16#${1%/*} << 32) + 16#${1#*/} ))
}

# 0 when at least NEED members (this one included) answer and none of them is ahead of this
# node: on a newer timeline, or on the same timeline further on. With "ties=lowest", a peer at
# the same position with a lower name is ahead too, so that members deciding at the same time
# from the same answers pick the same one.
most_advanced() {  # most_advanced NEED [ties=lowest]
  local own_tl own_lsn node answer tl lsn seen=1
  read -r _ own_tl own_lsn <<<"$(sql_local "$STATE_SQL")" || true
  [ -n "$own_lsn" ] || { log "this node's own state cannot be read"; return 1; }
  for node in $PG_NODES; do
    [ "$node" = "$PG_NODE_NAME" ] && continue
    answer=$(peer_state "$node")
    [ -n "$answer" ] || continue
    read -r _ tl lsn <<<"$answer"
    seen=$(( seen + 1 ))
    if [ "$tl" -gt "$own_tl" ] || { [ "$tl" -eq "$own_tl" ] && {
         [ "$(lsn_value "$lsn")" -gt "$(lsn_value "$own_lsn")" ] ||
         { [ "${2:-}" = ties=lowest ] && [ "$lsn" = "$own_lsn" ] && [[ "$node" < "$PG_NODE_NAME" ]]; }; }; }; then
      log "$node is ahead or preferred (timeline $tl at $lsn; this node: timeline $own_tl at $own_lsn)"
      return 1
    fi
  done
  if [ "$seen" -lt "$1" ]; then
    log "$seen of the $1 members needed answer (timeline $own_tl at $own_lsn)"
    return 1
  fi
}
