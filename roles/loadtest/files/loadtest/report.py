"""Print the verdict of one Locust run as JSON (used by the loadtest role on the controller).

    python -m loadtest.report STATS_CSV --duration S --rate R --success-ratio X --p95-ms MS
"""
import argparse
import json
import sys

from loadtest.core import verdict


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("stats_csv")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--success-ratio", type=float, required=True)
    parser.add_argument("--p95-ms", type=float, required=True)
    args = parser.parse_args(argv)
    with open(args.stats_csv, encoding="utf-8") as handle:
        result = verdict(handle.read(), args.duration, args.rate, args.success_ratio, args.p95_ms)
    json.dump(result, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
