#!/bin/sh
# The cost of synchronous quorum commit: the same Locust scenario against the deployed HA stack
# with commits waiting for a standby (ANY 1, the default) and with asynchronous replication,
# in alternating rounds (sync, async, sync, async, ...) so that slow drifts of the machine fall
# on both sides alike. Prints purchases/min per round, the median per mode and their ratio.
#
# The mode is switched at run time on every local PostgreSQL member (the runtime.conf that
# pg-node.sh writes, then a reload): no restart, no failover. Each member's own setting is put
# back at the end, also when the run fails.
#
# Environment: BENCH_SCENARIO (api|web, default api), BENCH_RATE (offered purchases/min,
# default 800), BENCH_DURATION (s per round, default 60), BENCH_ROUNDS (rounds per mode,
# default 2), BENCH_PREFIX (default bxlt-sync), HA_URL (default https://localhost).
set -eu
cd "$(dirname "$0")/.."
HERE=benchmarks/ha_vs_bare.d
. benchmarks/lib.sh
P=${BENCH_PREFIX:-bxlt-sync}
EVENT=run-$(date -u +%Y%m%d%H%M%S)
SCENARIO=${BENCH_SCENARIO:-api}
RATE=${BENCH_RATE:-800}
DURATION=${BENCH_DURATION:-60}
ROUNDS=${BENCH_ROUNDS:-2}
CPU_REPORTS=$(mktemp -d)
SAVED=$(mktemp -d)

members() {  # containers of the PostgreSQL members' services running on this machine
  for service in $(docker service ls -f label=boxoffice.component=postgres --format '{{.Name}}'); do
    docker ps -q -f "label=com.docker.swarm.service.name=$service"
  done
}
[ -n "$(members)" ] || { echo "No PostgreSQL member runs on this machine: deploy the stack (site.yml) first." >&2; exit 2; }

for c in $(members); do docker exec -u postgres "$c" cat /etc/boxoffice/runtime.conf >"$SAVED/$c"; done
restore() {
  for c in $(members); do
    [ -s "$SAVED/$c" ] || continue
    docker exec -i -u postgres "$c" sh -c 'cat >/etc/boxoffice/runtime.conf && pg_ctl -D "$PGDATA" reload >/dev/null' <"$SAVED/$c" || true
  done
}
trap restore EXIT INT TERM

set_mode() {  # sync|async
  for c in $(members); do
    if [ "$1" = sync ]; then
      docker exec -i -u postgres "$c" sh -c 'cat >/etc/boxoffice/runtime.conf' <"$SAVED/$c"
    else
      echo "synchronous_standby_names = ''" | docker exec -i -u postgres "$c" sh -c 'cat >/etc/boxoffice/runtime.conf'
    fi
    docker exec -u postgres "$c" sh -c 'pg_ctl -D "$PGDATA" reload >/dev/null'
  done
  sleep 2
  for c in $(members); do
    docker exec -u postgres "$c" psql -XAtqc "SELECT CASE WHEN pg_is_in_recovery() THEN '' ELSE 'primary synchronous_standby_names: ' || current_setting('synchronous_standby_names') END"
  done | grep primary
}

ha_task=$(docker ps -q -f label=com.docker.swarm.service.name=pretix-web | head -1)
[ -n "$ha_task" ] || { echo "No pretix-web task on this machine to make the bench event in." >&2; exit 2; }
TOKEN=$(bootstrap_event "$ha_task")
echo "scenario $SCENARIO, offered $RATE purchases/min for ${DURATION}s per round, $ROUNDS rounds per mode, event $EVENT"
alternate_rounds sync async
