#!/bin/bash
# Starts a Redis server (REDIS_MODE=server) or Sentinel (REDIS_MODE=sentinel).
#
# The sentinels are the only authority on which server is master:
# - A sentinel keeps its state (monitored master, epochs, known replicas and sentinels) in
#   $REDIS_SENTINEL_DIR/sentinel.conf on a volume and rewrites it on every change; it restarts
#   from that state. Only a sentinel without state asks the other sentinels, and only when none
#   answers does it take REDIS_INITIAL_MASTER (first deployment).
# - A server starts as master only when a sentinel names it. A server whose volume has been a
#   member before waits until a sentinel answers, so a stale former master is never made master
#   again by its own start; only a server with a new volume and no sentinel answering (first
#   deployment) follows REDIS_INITIAL_MASTER.
#
#   REDIS_NAME           this service's name (also the announced hostname)
#   REDIS_INITIAL_MASTER server that is master on first deployment
#   REDIS_SENTINELS      space-separated sentinel service names
#   REDIS_SERVERS        space-separated server service names
#   REDIS_MASTER_NAME    Sentinel's name for the monitored group
#   REDIS_QUORUM         sentinels that must agree the master is down (sentinel mode)
#   REDIS_DOWN_AFTER_MS  / REDIS_FAILOVER_TIMEOUT_MS  sentinel timings
#   REDIS_MIN_REPLICAS_TO_WRITE / REDIS_MIN_REPLICAS_MAX_LAG  a master refuses writes unless
#                        this many replicas acknowledged within this many seconds (0: never refuse)
#   REDIS_SENTINEL_DIR   sentinel state directory (a volume)
set -euo pipefail
: "${REDIS_MODE:=server}" "${REDIS_NAME:?}" "${REDIS_INITIAL_MASTER:?}" "${REDIS_SENTINELS:?}"
: "${REDIS_MASTER_NAME:=boxoffice}" "${REDIS_QUORUM:=2}"
: "${REDIS_DOWN_AFTER_MS:=3000}" "${REDIS_FAILOVER_TIMEOUT_MS:=20000}"
: "${REDIS_MIN_REPLICAS_TO_WRITE:=1}" "${REDIS_MIN_REPLICAS_MAX_LAG:=5}"
: "${REDIS_SENTINEL_DIR:=/var/lib/redis-sentinel}"

secret=/run/secrets/redis_password
if [ ! -r "$secret" ]; then
  echo "entrypoint: secret $secret is missing or unreadable" >&2
  exit 1
fi
password=$(cat "$secret")
export REDISCLI_AUTH=$password

# The master a running sentinel other than this one reports, or nothing.
sentinel_master() {
  local sentinel answer
  for sentinel in $REDIS_SENTINELS; do
    [ "$sentinel" = "$REDIS_NAME" ] && continue
    answer=$(timeout 3 redis-cli -h "$sentinel" -p 26379 --no-auth-warning \
      SENTINEL get-master-addr-by-name "$REDIS_MASTER_NAME" 2>/dev/null | head -n1) || true
    if [ -n "$answer" ] && [[ "$answer" != *ERR* ]]; then echo "$answer"; return 0; fi
  done
  return 1
}

# The server that reports itself master with at least one replica attached: what the
# servers themselves say, which outranks any sentinel's memory.
observed_master() {
  local server info
  for server in ${REDIS_SERVERS:-}; do
    info=$(timeout 3 redis-cli -h "$server" -p 6379 --no-auth-warning INFO replication 2>/dev/null | tr -d '\r') || true
    if grep -qx 'role:master' <<<"$info" && ! grep -qx 'connected_slaves:0' <<<"$info"; then
      echo "$server"; return 0
    fi
  done
  return 1
}

# Sentinel's saved identity, epochs and known peers, fit to start from. Sentinel tracks peers by
# address and writes them by hostname: a member restarted with a new address is saved twice, and
# the master can be saved as its own replica. Sentinel refuses to start on either ("Duplicate
# hostname and port for replica"), so duplicates and the master go; the master's INFO lists the
# replicas again within seconds.
saved_state() {  # saved_state CONF MASTER
  awk -v master="$2" -v self="$REDIS_NAME" '
    $1 != "sentinel" { next }
    $2 ~ /^(myid|current-epoch|config-epoch|leader-epoch)$/ { print; next }
    $2 == "known-replica" && $4 != master && !seen["replica " $4 " " $5]++ { print; next }
    $2 == "known-sentinel" && $4 != self && !seen["sentinel " $4 " " $5]++ { print }
  ' "$1"
}

umask 077
if [ "$REDIS_MODE" = sentinel ]; then
  mkdir -p "$REDIS_SENTINEL_DIR"
  conf=$REDIS_SENTINEL_DIR/sentinel.conf
  state=""
  master=$(awk -v name="$REDIS_MASTER_NAME" '$1 == "sentinel" && $2 == "monitor" && $3 == name { print $4 }' \
    "$conf" 2>/dev/null || true)
  observed=$(observed_master) || observed=""
  if [ -n "$master" ] && { [ -z "$observed" ] || [ "$observed" = "$master" ]; }; then
    echo "entrypoint: $REDIS_NAME resumes from its saved state, master is $master" >&2
    # Sentinel's own state; everything else below is regenerated from the environment.
    state=$(saved_state "$conf" "$master")
  elif [ -n "$observed" ]; then
    # No state, or state naming a server that is not master: sentinels that start from
    # different masters at the same epoch never agree, so all start from what the servers say.
    echo "entrypoint: $REDIS_NAME saved master '${master:-none}', servers report master $observed" >&2
    master=$observed
    state=$(grep -E "^sentinel (myid|current-epoch) " "$conf" 2>/dev/null || true)
  else
    master=$(sentinel_master) || master=$REDIS_INITIAL_MASTER
    echo "entrypoint: $REDIS_NAME has no saved state, master is $master" >&2
  fi
  # Sentinel rewrites this file (temporary file and rename) whenever its state changes.
  cat > "$conf.new" <<CONF
port 26379
protected-mode no
dir $REDIS_SENTINEL_DIR
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $REDIS_NAME
sentinel announce-port 26379
requirepass "$password"
sentinel sentinel-pass "$password"
sentinel monitor $REDIS_MASTER_NAME $master 6379 $REDIS_QUORUM
sentinel auth-pass $REDIS_MASTER_NAME "$password"
sentinel down-after-milliseconds $REDIS_MASTER_NAME $REDIS_DOWN_AFTER_MS
sentinel failover-timeout $REDIS_MASTER_NAME $REDIS_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $REDIS_MASTER_NAME 1
${state}
CONF
  mv "$conf.new" "$conf"
  chown -R redis:redis "$REDIS_SENTINEL_DIR"
  exec setpriv --reuid=redis --regid=redis --init-groups redis-sentinel "$conf"
fi

# A volume that holds data or the marker has served in this group before.
marker=/var/lib/redis/.boxoffice-member
if [ -e "$marker" ] || [ -e /var/lib/redis/appendonlydir ] || [ -e /var/lib/redis/dump.rdb ]; then
  until master=$(sentinel_master); do
    echo "entrypoint: $REDIS_NAME waits for a sentinel to name the master" >&2
    sleep 2
  done
else
  master=$(sentinel_master) || master=$REDIS_INITIAL_MASTER
fi
echo "entrypoint: $REDIS_NAME starting as server, master is $master" >&2

conf=/etc/boxoffice/redis.conf
cat > "$conf" <<CONF
bind * -::*
port 6379
protected-mode no
dir /var/lib/redis
# Celery's queue and carts live here: every second an fsync bounds loss on a crash to ~1 s,
# and acknowledged writes additionally wait for a replica (WAIT) where it matters.
appendonly yes
appendfsync everysec
requirepass "$password"
masterauth "$password"
replica-announce-ip $REDIS_NAME
replica-announce-port 6379
# A master that no replica acknowledges (isolated by a partition) refuses writes, which would
# be lost when the sentinels promote a replica on the other side.
min-replicas-to-write $REDIS_MIN_REPLICAS_TO_WRITE
min-replicas-max-lag $REDIS_MIN_REPLICAS_MAX_LAG
CONF
[ "$master" != "$REDIS_NAME" ] && echo "replicaof $master 6379" >> "$conf"
chown redis:redis "$conf"
touch "$marker"
chown redis:redis "$marker"
exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$conf"
