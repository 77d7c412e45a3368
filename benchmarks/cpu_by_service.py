#!/usr/bin/env python3
"""CPU time this machine's containers used while a command ran, by Swarm service.

Polls every container's cumulative CPU counter through the Docker API until the command exits,
so containers that start and go during the run (Locust's) are counted too, up to their last
poll. Prints cores used on average per service (a container outside Swarm counts under its own
name), the containers' total, and the whole machine's busy cores from /proc/stat: the
difference is what ran outside containers (dockerd, the controller, the kernel's threads).
Prints numbers only; the command's exit status is passed on.

    .venv/bin/python benchmarks/cpu_by_service.py [--interval 2] [--output FILE] -- COMMAND...
"""

import argparse
import collections
import os
import subprocess
import sys
import time

import docker


def container_cpu_seconds(client):
    usage = {}
    for container in client.containers.list():
        try:
            stats = container.stats(stream=False, one_shot=True)
        except (docker.errors.APIError, ValueError):
            continue  # it went between the listing and the question (an error, or an empty answer)
        service = container.labels.get('com.docker.swarm.service.name', container.name)
        usage[container.id] = (service, stats['cpu_stats']['cpu_usage']['total_usage'] / 1e9)
    return usage


def machine_busy_jiffies():
    with open('/proc/stat', encoding='ascii') as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--interval', type=float, default=2.0)
    parser.add_argument('--output', help='write the report here instead of standard output')
    parser.add_argument('command', nargs=argparse.REMAINDER)
    options = parser.parse_args()
    command = options.command[1:] if options.command[:1] == ['--'] else options.command
    if not command:
        parser.error('give the command to measure after --')

    client = docker.from_env()
    first = container_cpu_seconds(client)
    last = dict(first)
    busy_before, started = machine_busy_jiffies(), time.monotonic()
    process = subprocess.Popen(command)  # pylint: disable=consider-using-with
    while process.poll() is None:
        time.sleep(options.interval)
        last.update(container_cpu_seconds(client))
    elapsed = time.monotonic() - started
    machine_cores = (machine_busy_jiffies() - busy_before) / os.sysconf('SC_CLK_TCK') / elapsed

    by_service = collections.Counter()
    for container_id, (service, seconds) in last.items():
        by_service[service] += seconds - first.get(container_id, (service, 0.0))[1]
    containers = sum(by_service.values())
    lines = ['%.0f s: machine busy %.2f cores of %d; containers %.2f; outside containers %.2f'
             % (elapsed, machine_cores, os.cpu_count(), containers / elapsed, machine_cores - containers / elapsed)]
    lines += ['  %-40s %6.3f cores %8.1f cpu-s' % (service, seconds / elapsed, seconds)
              for service, seconds in by_service.most_common() if seconds >= 0.05]
    report = '\n'.join(lines) + '\n'
    if options.output:
        with open(options.output, 'w', encoding='utf-8') as handle:
            handle.write(report)
    else:
        sys.stdout.write(report)
    return process.returncode


if __name__ == '__main__':
    sys.exit(main())
