#!/bin/sh
# The same Locust scenario against the HA stack and against a bare pretix, side by side,
# printing purchases/min for both and their ratio (HA / bare). Absolute numbers depend on
# the machine (and on whatever else it runs); the ratio is the result.
#
#   benchmarks/ha_vs_bare.sh            # full comparison
#   benchmarks/ha_vs_bare.sh up         # only start the bare pretix, print its URL/slug/token
#   benchmarks/ha_vs_bare.sh down       # remove it
#
# The bare pretix: the same image, pretix.cfg and total gunicorn worker count as the HA stack's pretix-web
# service, one PostgreSQL and one Redis container, a celery worker, no nginx/pgpool/HAProxy,
# on a private bridge network; its port is published on loopback only. Static files are
# nginx's job: web runs skip the static assets on both sides, so both compare the same
# pretix requests.
#
# Environment: BENCH_SCENARIO (api|web, default api), BENCH_RATE (offered purchases/min,
# default 1600 = the 2x profile), BENCH_DURATION (s, default 60), BENCH_PORT (default 18080),
# BENCH_PREFIX (Docker object prefix, default bxlt-bench), PRETIX_IMAGE / PRETIX_WEB_WORKERS
# (default: the pretix-web service's image, and its workers per task times its replicas), HA_URL (default https://localhost),
# BENCH_EVENT (event slug, default a new one per run: run-<UTC time>), HA_ORGANIZER / HA_EVENT /
# HA_TOKEN (default: organiser "bench" and event BENCH_EVENT, made on the HA stack by the same
# bootstrap.py as on the bare side, through a local pretix-web task: both sides then sell the
# same product from an event with the same settings and no earlier orders; an event's earlier
# orders make every availability check slower). Each run's event and orders stay in the HA
# stack's database, like any load test's.
# After the ratio it prints the cores each service used during each side's run
# (benchmarks/cpu_by_service.py).
set -eu
cd "$(dirname "$0")/.."
HERE=benchmarks/ha_vs_bare.d
. benchmarks/lib.sh
P=${BENCH_PREFIX:-bxlt-bench}
EVENT=${BENCH_EVENT:-run-$(date -u +%Y%m%d%H%M%S)}
PORT=${BENCH_PORT:-18080}
SCENARIO=${BENCH_SCENARIO:-api}
RATE=${BENCH_RATE:-1600}
DURATION=${BENCH_DURATION:-60}
# The images role's debootstrapped base (site.yml made it).
BASE_IMAGE=${BASE_IMAGE:-$(docker images boxoffice/base --format '{{.Repository}}:{{.Tag}}' | grep ':bookworm-' | head -1)}
DATASTORE_IMAGE=$P/datastore:1

service_env() {
  docker service inspect pretix-web --format '{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}' 2>/dev/null \
    | sed -n "s/^$1=//p"
}
PRETIX_IMAGE=${PRETIX_IMAGE:-$(docker service inspect pretix-web --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' 2>/dev/null | sed 's/@sha256:.*//')}
# The bare pretix gets as many gunicorn workers as all pretix-web tasks together, so the
# ratio compares the same pretix capacity with and without the HA layers.
if [ -z "${PRETIX_WEB_WORKERS:-}" ]; then
  per_task=$(service_env PRETIX_WEB_WORKERS)
  replicas=$(docker service inspect pretix-web --format '{{.Spec.Mode.Replicated.Replicas}}' 2>/dev/null || true)
  PRETIX_WEB_WORKERS=$(( ${per_task:-2} * ${replicas:-1} ))
fi

down() {
  for c in "$P-web" "$P-worker" "$P-migrate" "$P-redis" "$P-pg"; do
    docker rm -f -v "$c" >/dev/null 2>&1 || true
  done
  docker network rm "$P-net" >/dev/null 2>&1 || true
  rm -f "$CFG_FILE"
}

# The HA stack's own pretix.cfg (metrics, locale, proxy headers, mail...), so that both sides run
# pretix alike and differ only in what stands between pretix and its data. The variables that
# pretix_run sets take precedence over the file and point the bare pretix at its own services.
CFG_FILE=${TMPDIR:-/tmp}/$P-pretix.cfg
ha_pretix_cfg() {
  config=$(docker service inspect pretix-web --format \
    '{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{if eq .File.Name "/etc/pretix/pretix.cfg"}}{{.ConfigName}}{{end}}{{end}}' 2>/dev/null) \
    && [ -n "$config" ] && docker config inspect "$config" --format '{{json .Spec.Data}}' | tr -d '"' | base64 -d
}

pretix_run() {  # name, mode, extra docker args...
  name=$1 mode=$2; shift 2
  [ ! -s "$CFG_FILE" ] || set -- -v "$CFG_FILE:/etc/pretix/pretix.cfg:ro" "$@"
  docker run --name "$name" --network "$P-net" --network-alias "${name#"$P"-}" \
    -e PRETIX_PRETIX_URL="http://127.0.0.1:$PORT" -e PRETIX_PRETIX_INSTANCE_NAME=bench \
    -e PRETIX_DATABASE_BACKEND=postgresql -e PRETIX_DATABASE_NAME=postgres \
    -e PRETIX_DATABASE_USER=postgres -e PRETIX_DATABASE_HOST=pg \
    -e PRETIX_REDIS_LOCATION=redis://redis:6379/0 -e PRETIX_REDIS_SESSIONS=true \
    -e PRETIX_CELERY_BROKER=redis://redis:6379/1 -e PRETIX_CELERY_BACKEND=redis://redis:6379/2 \
    -e PRETIX_DJANGO_SECRET="$SECRET" -e PRETIX_WEB_WORKERS="$PRETIX_WEB_WORKERS" \
    "$@" "$PRETIX_IMAGE" "$mode"
}


up() {
  [ -n "$PRETIX_IMAGE" ] || { echo "No pretix-web service to copy the image from: set PRETIX_IMAGE." >&2; exit 2; }
  docker image inspect "$DATASTORE_IMAGE" >/dev/null 2>&1 \
    || docker build -q --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$DATASTORE_IMAGE" "$HERE" >/dev/null
  down
  if ha_pretix_cfg >"$CFG_FILE"; then chmod 644 "$CFG_FILE"; else rm -f "$CFG_FILE"; fi
  SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  docker network create "$P-net" >/dev/null
  docker run -d --name "$P-pg" --network "$P-net" --network-alias pg "$DATASTORE_IMAGE" pg-start >/dev/null
  docker run -d --name "$P-redis" --network "$P-net" --network-alias redis "$DATASTORE_IMAGE" \
    redis-server --protected-mode no --save "" >/dev/null
  i=0
  until docker exec "$P-pg" su postgres -c 'psql -qAt -c "select 1"' >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 60 ] || { echo "bare PostgreSQL did not start" >&2; exit 1; }; sleep 1
  done
  pretix_run "$P-migrate" migrate >/dev/null
  docker rm "$P-migrate" >/dev/null
  pretix_run "$P-web" web -d -p "127.0.0.1:$PORT:8000" >/dev/null
  pretix_run "$P-worker" worker -d >/dev/null
  i=0
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthcheck/")" = 200 ]; do
    i=$((i + 1)); [ "$i" -lt 120 ] || { echo "bare pretix did not answer" >&2; exit 1; }; sleep 1
  done
  TOKEN=$(bootstrap_event "$P-web")
  echo "BARE_URL=http://127.0.0.1:$PORT BARE_ORGANIZER=bench BARE_EVENT=$EVENT BARE_TOKEN=$TOKEN"
}

CPU_REPORTS=$(mktemp -d)

case "${1:-run}" in
  up) up; exit 0 ;;
  down) down; exit 0 ;;
  run) ;;
  *) echo "usage: $0 [run|up|down]" >&2; exit 2 ;;
esac

# Each side is measured alone on a quiet machine (wait_quiet): what one side leaves behind
# (celery follow-up tasks, draining requests) must not run during the other's measurement.
# The HA stack goes first, before the bare pretix exists.

trap down EXIT INT TERM
echo "scenario $SCENARIO, offered $RATE purchases/min for ${DURATION}s; pretix $PRETIX_IMAGE, $PRETIX_WEB_WORKERS gunicorn workers on each side"
wait_quiet
if [ -z "${HA_ORGANIZER:-}" ]; then
  ha_task=$(docker ps -q -f label=com.docker.swarm.service.name=pretix-web | head -1)
  [ -n "$ha_task" ] || { echo "No pretix-web task on this machine to make the HA bench event in: set HA_ORGANIZER/HA_EVENT/HA_TOKEN." >&2; exit 2; }
  HA_ORGANIZER=bench HA_EVENT=$EVENT HA_TOKEN=$(bootstrap_event "$ha_task")
fi
if ! HA=$(measure ha "${HA_URL:-https://localhost}" "$HA_ORGANIZER" "${HA_EVENT:-$HA_ORGANIZER}" "${HA_TOKEN:-}"); then
  echo "HA: not measured (no reachable HA event; set HA_URL/HA_ORGANIZER/HA_EVENT/HA_TOKEN)"
  exit 1
fi
eval "$(up | tail -n 1)"
wait_quiet
set -- $(measure bare "$BARE_URL" "$BARE_ORGANIZER" "$BARE_EVENT" "$BARE_TOKEN")
echo "bare: $1 purchases/min (success ratio $2, worst request p95 $3 ms)"
BARE=$1
set -- $HA
echo "HA:   $1 purchases/min (success ratio $2, worst request p95 $3 ms)"
python3 -c 'import sys; b=float(sys.argv[2]); print("ratio HA/bare: %s" % (round(float(sys.argv[1]) / b, 3) if b else "n/a"))' "$1" "$BARE"
# Where the cores went: on one machine the HA layers' own work (replication, health checks,
# proxies, TLS) is taken from the same cores pretix needs.
for side in ha bare; do
  echo "CPU during the $side run (from the load test's start to its clean-up):"
  cat "$CPU_REPORTS/$side"
done
