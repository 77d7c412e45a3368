#!/usr/bin/env python3
"""CPU time this machine's containers used while a command ran, by Swarm service.

Polls every container's cumulative CPU counter through the Docker API until the command exits,
so containers that start and go during the run (Locust's) are counted too, up to their last
poll. Prints cores used on average per service (a container outside Swarm counts under its own
name), the containers' total, and the whole machine's busy cores from /proc/stat (time the
hypervisor stole is not counted as busy). The difference ran outside containers: the command
itself (the controller) and the busiest host processes (dockerd, containerd, the kernel's
threads) are listed under it. Prints numbers only; the command's exit status is passed on.

    .venv/bin/python benchmarks/cpu_by_service.py [--interval 2] [--output FILE] -- COMMAND...
"""

import argparse
import collections
import os
import resource
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
        user, nice, system, _idle, _iowait, irq, softirq, _steal = (
            int(value) for value in handle.readline().split()[1:9])
    return user + nice + system + irq + softirq  # not waiting, nor time the hypervisor gave to other guests


def host_process_jiffies():
    """CPU jiffies of every process that runs outside containers, by pid: (name, jiffies)."""
    usage = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cgroup' % pid, encoding='ascii') as handle:
                if '/docker/' in handle.read():
                    continue
            with open('/proc/%s/stat' % pid, encoding='utf-8', errors='replace') as handle:
                stat = handle.read()
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rindex(')') + 2:].split()
        usage[pid] = (stat[stat.index('(') + 1:stat.rindex(')')], int(fields[11]) + int(fields[12]))
    return usage


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
    hosts_before = host_process_jiffies()
    busy_before, started = machine_busy_jiffies(), time.monotonic()
    process = subprocess.Popen(command)  # pylint: disable=consider-using-with
    while process.poll() is None:
        time.sleep(options.interval)
        last.update(container_cpu_seconds(client))
    elapsed = time.monotonic() - started
    jiffy = 1.0 / os.sysconf('SC_CLK_TCK')
    machine_cores = (machine_busy_jiffies() - busy_before) * jiffy / elapsed
    by_host_process = collections.Counter()
    for pid, (name, jiffies) in host_process_jiffies().items():
        if pid in hosts_before:
            by_host_process[name] += (jiffies - hosts_before[pid][1]) * jiffy
    command_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_host_process['(the command and its children)'] = command_usage.ru_utime + command_usage.ru_stime

    by_service = collections.Counter()
    for container_id, (service, seconds) in last.items():
        by_service[service] += seconds - first.get(container_id, (service, 0.0))[1]
    containers = sum(by_service.values())
    lines = ['%.0f s: machine busy %.2f cores of %d; containers %.2f; outside containers %.2f'
             % (elapsed, machine_cores, os.cpu_count(), containers / elapsed, machine_cores - containers / elapsed)]
    lines += ['  %-40s %6.3f cores %8.1f cpu-s' % (service, seconds / elapsed, seconds)
              for service, seconds in by_service.most_common() if seconds >= 0.05]
    lines += ['  outside: %-31s %6.3f cores %8.1f cpu-s' % (name, seconds / elapsed, seconds)
              for name, seconds in by_host_process.most_common(8) if seconds >= 0.05]
    report = '\n'.join(lines) + '\n'
    if options.output:
        with open(options.output, 'w', encoding='utf-8') as handle:
            handle.write(report)
    else:
        sys.stdout.write(report)
    return process.returncode


if __name__ == '__main__':
    sys.exit(main())
