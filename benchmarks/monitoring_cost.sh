#!/bin/sh
# The monitoring stack's own cost on the deployed stack:
# 1. idle: the CPU and memory of each monitoring service, sampled while no load runs;
# 2. under load: the same Locust scenario with monitoring running and with it stopped, in
#    alternating rounds (on, off, on, off, ...) so that slow drifts of the machine fall on both
#    sides alike. Prints purchases/min per round, the median per mode and their ratio.
#
# "Off" scales the replicated monitoring services to 0 and keeps node-exporter (global) off every
# node with a placement constraint no node matches; everything is put back at the end, also when
# the run fails.
#
# Environment: BENCH_SCENARIO (api|web, default web), BENCH_RATE (offered purchases/min,
# default 800), BENCH_DURATION (s per round, default 60), BENCH_ROUNDS (rounds per mode,
# default 2), BENCH_IDLE_SAMPLES (default 6, 10 s apart), BENCH_PREFIX (default bxlt-mon),
# HA_URL (default https://localhost).
set -eu
cd "$(dirname "$0")/.."
HERE=benchmarks/ha_vs_bare.d
. benchmarks/lib.sh
P=${BENCH_PREFIX:-bxlt-mon}
EVENT=run-$(date -u +%Y%m%d%H%M%S)
SCENARIO=${BENCH_SCENARIO:-web}
RATE=${BENCH_RATE:-800}
DURATION=${BENCH_DURATION:-60}
ROUNDS=${BENCH_ROUNDS:-2}
CPU_REPORTS=$(mktemp -d)
OFF_CONSTRAINT='node.labels.boxoffice.benchmark-off==true'

replicated=$(docker service ls -f label=boxoffice.tier=monitoring -f mode=replicated --format '{{.Name}}')
global=$(docker service ls -f label=boxoffice.tier=monitoring -f mode=global --format '{{.Name}}')
[ -n "$replicated" ] || { echo "No monitoring service is deployed: run site.yml with monitoring enabled first." >&2; exit 2; }

set_mode() {  # on|off: the monitoring tier
  if [ "$1" = on ]; then n=1; else n=0; fi
  for s in $replicated; do docker service scale -d "$s=$n" >/dev/null; done
  for s in $global; do
    if [ "$1" = on ]; then
      docker service inspect "$s" --format '{{json .Spec.TaskTemplate.Placement.Constraints}}' | grep -q benchmark-off \
        && docker service update -d --constraint-rm "$OFF_CONSTRAINT" "$s" >/dev/null
    else
      docker service update -d --constraint-add "$OFF_CONSTRAINT" "$s" >/dev/null
    fi
  done
  # Until every task of the new count runs, or is gone.
  for s in $replicated $global; do
    i=0
    while :; do
      running=$(docker service ps -f desired-state=running --format '{{.CurrentState}}' "$s" | grep -c '^Running' || true)
      if [ "$1" = on ] && [ "$running" -ge 1 ]; then break; fi
      if [ "$1" = off ] && [ -z "$(docker ps -q -f "label=com.docker.swarm.service.name=$s")" ]; then break; fi
      i=$((i + 1)); [ "$i" -lt 120 ] || { echo "$s did not turn $1 within 120 s" >&2; exit 1; }
      sleep 1
    done
  done
}
trap 'set_mode on' EXIT INT TERM

echo "== idle: monitoring services, ${BENCH_IDLE_SAMPLES:-6} samples 10 s apart"
wait_quiet
samples=$(mktemp)
i=0
while [ "$i" -lt "${BENCH_IDLE_SAMPLES:-6}" ]; do
  for s in $replicated $global; do
    for c in $(docker ps -q -f "label=com.docker.swarm.service.name=$s"); do
      docker stats --no-stream --format "$s {{.CPUPerc}} {{.MemUsage}}" "$c"
    done
  done >>"$samples"
  i=$((i + 1)); sleep 10
done
python3 - "$samples" <<'PY'
import collections, re, statistics, sys
units = {'B': 1, 'KiB': 2**10, 'MiB': 2**20, 'GiB': 2**30}
cpu, mem = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    service, pct, used = line.split()[:3]
    cpu[service].append(float(pct.rstrip('%')))
    number, unit = re.match(r'([\d.]+)(\w+)', used).groups()
    mem[service].append(float(number) * units[unit] / 2**20)
print('%-20s %10s %10s' % ('service', 'CPU %', 'memory MiB'))
for service in sorted(cpu):
    print('%-20s %10.2f %10.1f' % (service, statistics.mean(cpu[service]), statistics.mean(mem[service])))
print('%-20s %10.2f %10.1f' % ('total', sum(statistics.mean(v) for v in cpu.values()),
                                 sum(statistics.mean(v) for v in mem.values())))
PY

ha_task=$(docker ps -q -f label=com.docker.swarm.service.name=pretix-web | head -1)
[ -n "$ha_task" ] || { echo "No pretix-web task on this machine to make the bench event in." >&2; exit 2; }
TOKEN=$(bootstrap_event "$ha_task")
echo "== under load: scenario $SCENARIO, offered $RATE purchases/min for ${DURATION}s per round, $ROUNDS rounds per mode"
alternate_rounds on off
