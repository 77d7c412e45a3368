#!/bin/bash
# Starts a Redis server (REDIS_MODE=server) or Sentinel (REDIS_MODE=sentinel).
# The master is whatever the sentinels currently report, so a former master that comes back
# after a failover starts as a replica; only a cluster no sentinel knows yet starts from
# REDIS_INITIAL_MASTER.
#
#   REDIS_NAME           this service's name (also the announced hostname)
#   REDIS_INITIAL_MASTER server that is master on first deployment
#   REDIS_SENTINELS      space-separated sentinel service names
#   REDIS_MASTER_NAME    Sentinel's name for the monitored group
#   REDIS_QUORUM         sentinels that must agree the master is down (sentinel mode)
#   REDIS_DOWN_AFTER_MS  / REDIS_FAILOVER_TIMEOUT_MS  sentinel timings
set -euo pipefail
: "${REDIS_MODE:=server}" "${REDIS_NAME:?}" "${REDIS_INITIAL_MASTER:?}" "${REDIS_SENTINELS:?}"
: "${REDIS_MASTER_NAME:=boxoffice}" "${REDIS_QUORUM:=2}"
: "${REDIS_DOWN_AFTER_MS:=3000}" "${REDIS_FAILOVER_TIMEOUT_MS:=20000}"

secret=/run/secrets/redis_password
if [ ! -r "$secret" ]; then
  echo "entrypoint: secret $secret is missing or unreadable" >&2
  exit 1
fi
password=$(cat "$secret")
export REDISCLI_AUTH=$password

current_master() {
  local sentinel answer
  for sentinel in $REDIS_SENTINELS; do
    [ "$sentinel" = "$REDIS_NAME" ] && continue
    answer=$(timeout 3 redis-cli -h "$sentinel" -p 26379 --no-auth-warning \
      SENTINEL get-master-addr-by-name "$REDIS_MASTER_NAME" 2>/dev/null | head -n1) || true
    if [ -n "$answer" ] && [[ "$answer" != *ERR* ]]; then echo "$answer"; return 0; fi
  done
  echo "$REDIS_INITIAL_MASTER"
}

master=$(current_master)
echo "entrypoint: $REDIS_NAME starting as $REDIS_MODE, master is $master" >&2
umask 077
if [ "$REDIS_MODE" = sentinel ]; then
  # Sentinel refuses a master hostname it cannot resolve; Swarm publishes it once healthy.
  until getent hosts "$master" >/dev/null; do sleep 1; done
  conf=/etc/boxoffice/sentinel.conf
  cat > "$conf" <<CONF
port 26379
protected-mode no
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
CONF
  chown redis:redis "$conf"
  exec setpriv --reuid=redis --regid=redis --init-groups redis-sentinel "$conf"
fi

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
CONF
[ "$master" != "$REDIS_NAME" ] && echo "replicaof $master 6379" >> "$conf"
chown redis:redis "$conf"
exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$conf"
