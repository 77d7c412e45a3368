#!/usr/bin/env python3
"""Seconds for swarm_service_scale to converge when scaling a busybox service 1 -> 10 -> 2.

Runs the real module through the `ansible` CLI (as scale.yml does) against this machine's Swarm
and prints, per step, the module's own `seconds` (from the service update until the count held
for the whole monitor window), the part of it that was the monitor hold, and the wall time of
the ansible run (start-up included). Prints numbers only; nothing is asserted.

    .venv/bin/python benchmarks/scale_convergence.py [--rounds 3] [--monitor 5]
"""

import argparse
import os
import statistics
import sys
import time
import uuid

import docker

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))
from conftest import build_busybox_image, run_ansible_module  # noqa: E402  (the tests' helpers)

STEPS = (10, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--monitor', type=float, default=5.0,
                        help="the service's UpdateConfig.Monitor in seconds (Docker's default is 5)")
    options = parser.parse_args()

    client = docker.from_env()
    image = build_busybox_image(client)
    name = 'bxbench-scale-%s' % uuid.uuid4().hex[:8]
    second = 10 ** 9
    client.api.create_service(
        name=name, mode={'Replicated': {'Replicas': 1}}, endpoint_spec={'Mode': 'dnsrr'},
        task_template={'ContainerSpec': {'Image': image, 'Command': ['sleep', '86400'],
                                         'StopGracePeriod': second}},
        update_config={'Monitor': int(options.monitor * second)})
    samples = dict((step, []) for step in STEPS)
    try:
        start = run_ansible_module('boxoffice.pretix.swarm_service_scale', {'name': name, 'replicas': 1})
        if start['rc'] != 0:
            sys.exit('the service did not start: %s' % start.get('msg'))
        print('service %s, monitor window %.1fs, %d CPUs' % (name, options.monitor, os.cpu_count()))
        # to_count_s: module_s minus the monitor hold, i.e. roughly when the count was first reached.
        print('%-6s %-9s %12s %12s %12s' % ('round', 'step', 'module_s', 'to_count_s', 'wall_s'))
        for round_number in range(1, options.rounds + 1):
            previous = 1
            for replicas in STEPS + (1,):
                began = time.monotonic()
                result = run_ansible_module('boxoffice.pretix.swarm_service_scale',
                                            {'name': name, 'replicas': replicas, 'wait_timeout': 600})
                wall = time.monotonic() - began
                if result['rc'] != 0:
                    sys.exit('scaling to %d failed: %s' % (replicas, result.get('msg')))
                seconds = result['services'][0]['seconds']
                if replicas in samples:
                    samples[replicas].append(seconds)
                    step = '%d->%d' % (previous, replicas)
                    print('%-6d %-9s %12.2f %12.2f %12.2f'
                          % (round_number, step, seconds, seconds - options.monitor, wall))
                previous = replicas
        for replicas in STEPS:
            values = samples[replicas]
            print('median to %2d replicas: %.2fs (monitor hold %.1fs included; min %.2f, max %.2f)'
                  % (replicas, statistics.median(values), options.monitor, min(values), max(values)))
    finally:
        client.api.remove_service(name)


if __name__ == '__main__':
    main()
