"""Summarise the failover drills recorded in reports/failover.jsonl (min / median / max).

The drills themselves are tests/integration/test_data_tier_failover.py; each run appends one
record per drill. Run them a few times, then this script:

    for i in 1 2 3; do python -m pytest -m slow -s tests/integration/test_data_tier_failover.py; done
    python benchmarks/failover_summary.py
"""

import json
import os
import statistics
import sys

REPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'reports', 'failover.jsonl')
METRICS = {'postgres': 'stop_to_first_write_s', 'redis': 'stop_to_recovery_s'}


def main(path=REPORT):
    if not os.path.exists(path):
        sys.exit('%s does not exist: run tests/integration/test_data_tier_failover.py first' % path)
    with open(path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for drill, metric in METRICS.items():
        runs = [r for r in records if r.get('drill') == drill and metric in r]
        if not runs:
            print('%-8s no runs recorded' % drill)
            continue
        values = [r[metric] for r in runs]
        lost = sum(r['acknowledged_missing'] for r in runs)
        print('%-8s runs=%d %s min=%.2f median=%.2f max=%.2f acknowledged_missing_total=%d'
              % (drill, len(runs), metric, min(values), statistics.median(values), max(values), lost))


if __name__ == '__main__':
    main(*sys.argv[1:])
