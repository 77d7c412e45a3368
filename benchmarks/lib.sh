# Shared by the benchmarks (sourced from the repository root): one load-test run through the
# loadtest role, a bench event made inside a pretix container, and waiting for a quiet machine.
# Callers set P (Docker object prefix), SCENARIO, RATE, DURATION, EVENT, HERE
# (benchmarks/ha_vs_bare.d) and CPU_REPORTS (a directory for the CPU table of each run).

bootstrap_event() {  # pretix container -> prints the API token of organiser "bench" (event $EVENT made)
  docker exec -e BENCH_ORGANIZER=bench -e BENCH_EVENT="$EVENT" "$1" python -m pretix shell -c "$(cat "$HERE/bootstrap.py")" | sed -n 's/^TOKEN=//p'
}

measure() {  # label, url, organizer, event, token -> prints purchases/min; CPU by service in $CPU_REPORTS/label
  out=$(mktemp -d)
  . .venv/bin/activate
  python benchmarks/cpu_by_service.py --output "$CPU_REPORTS/$1" -- ansible-playbook loadtest.yml -e loadtest_fail_on_breach=false -e loadtest_scenario="$SCENARIO" \
    -e loadtest_target_rate="$RATE" -e loadtest_profile=1x -e loadtest_static_assets=false -e loadtest_duration="$DURATION" \
    -e loadtest_target_url="$2" -e loadtest_organizer="$3" -e loadtest_event="$4" \
    -e loadtest_api_token="$5" -e loadtest_reports_dir="$out" -e loadtest_name_prefix="$P-$1" \
    >"$out/ansible.log" 2>&1 || { echo "$1: load test did not run, see $out/ansible.log" >&2; return 1; }
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; print(r["purchases_per_min"], r["success_ratio"], r["worst_request_p95_ms"])' \
    "$(ls -d "$out"/*/)summary.json"
}

wait_quiet() {
  i=0
  until awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v max="${BENCH_QUIET_LOAD:-2.5}" 'BEGIN { exit !(l < max) }'; do
    i=$((i + 1)); [ "$i" -lt 120 ] || { echo "the machine did not quieten (load $(cut -d' ' -f1 /proc/loadavg))" >&2; exit 1; }
    sleep 5
  done
}

# Alternating rounds (A, B, A, B, ...) so that slow drifts of the machine fall on both modes
# alike: $ROUNDS rounds of, for each mode given, the caller's set_mode MODE, a quiet machine and
# one measure against the bench event; prints every round, the median per mode and the ratio of
# the first mode to the second. Needs TOKEN (bootstrap_event's).
alternate_rounds() {
  modes="$*"
  results=$(mktemp)
  round=0
  while [ "$round" -lt "$ROUNDS" ]; do
    round=$((round + 1))
    for mode in $modes; do
      set_mode "$mode"
      wait_quiet
      set -- $(measure "$mode-$round" "${HA_URL:-https://localhost}" bench "$EVENT" "$TOKEN")
      echo "round $round $mode: $1 purchases/min (success ratio $2, worst request p95 $3 ms)"
      echo "$mode $1" >>"$results"
    done
  done
  python3 - "$results" $modes <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
first, second = sys.argv[2:4]
med = {mode: statistics.median(float(v) for m, v in rows if m == mode) for mode in (first, second)}
print('median purchases/min: %s %.1f, %s %.1f; ratio %s/%s: %s'
      % (first, med[first], second, med[second], first, second,
         round(med[first] / med[second], 3) if med[second] else 'n/a'))
PY
}
