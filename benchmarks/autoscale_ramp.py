#!/usr/bin/env python3
"""A load ramp (low, high, low) through the loadtest role, with pretix-web fixed at 2 replicas and
then under the in-swarm autoscaler, in one run on the deployed stack.

Each stage is one run of loadtest.yml at its offered rate. A sampler reads pretix-web's desired
and running replicas every 5 s. Printed: per stage and mode, the offered and achieved purchases
per minute, the purchase (whole checkout) p95 and the worst request p95, the replicas seen; for
the autoscaled ramp, the scale events and the reversals inside the stabilisation window (a
scale-down followed by a scale-up, or the reverse, less than the window apart: flapping). The
numbers go to reports/autoscale_ramp.json and the picture to reports/autoscale_ramp.png.

The fixed mode scales the autoscaler service to 0 and pretix-web to 2; the autoscaled mode starts
from 2 replicas with the autoscaler at 1. The autoscaler's replicas and pretix-web's count are put
back at the end.

    .venv/bin/python benchmarks/autoscale_ramp.py [--stages 120:180,900:420,120:420]
        [--scenario web] [--modes fixed,autoscaled]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import docker

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = os.path.join(REPO_ROOT, 'reports')
FIXED_REPLICAS = 2


def parse_stages(text):
    stages = []
    for part in text.split(','):
        rate, seconds = part.split(':')
        stages.append((float(rate), int(seconds)))
    return stages


def replicas(service):
    service.reload()
    desired = service.attrs['Spec']['Mode']['Replicated']['Replicas']
    running = sum(1 for task in service.tasks(filters={'desired-state': 'running'})
                  if task['Status']['State'] == 'running')
    return desired, running


def scale_and_wait(service, count, timeout=300):
    service.reload()
    if service.attrs['Spec']['Mode']['Replicated']['Replicas'] != count:
        service.scale(count)
    deadline = time.time() + timeout
    while replicas(service) != (count, count):
        if time.time() > deadline:
            sys.exit('%s did not reach %d running replicas in %d s' % (service.name, count, timeout))
        time.sleep(2)


class Sampler(threading.Thread):
    def __init__(self, service):
        super().__init__(daemon=True)
        self.service, self.samples, self.stage = service, [], None
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            desired, running = replicas(self.service)
            self.samples.append({'t': time.time(), 'desired': desired, 'running': running,
                                 'offered': self.stage})
            self.stopping.wait(5)


def load_stage(args, rate, seconds, label):
    out = tempfile.mkdtemp(prefix='bxlt-ramp-')
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), 'loadtest.yml',
               '-e', 'loadtest_fail_on_breach=false', '-e', 'loadtest_scenario=' + args.scenario,
               '-e', 'loadtest_target_rate=%s' % rate, '-e', 'loadtest_profile=1x',
               '-e', 'loadtest_duration=%d' % seconds, '-e', 'loadtest_reports_dir=' + out,
               '-e', 'loadtest_name_prefix=bxlt-ramp-' + label]
    with open(os.path.join(out, 'ansible.log'), 'w', encoding='utf-8') as log:
        code = subprocess.call(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit('%s: the load test did not run, see %s/ansible.log' % (label, out))
    [run_dir] = [d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d))]
    with open(os.path.join(out, run_dir, 'summary.json'), encoding='utf-8') as handle:
        return json.load(handle)['runs'][0]


def scale_events(samples):
    events, previous = [], None
    for sample in samples:
        if previous is not None and sample['desired'] != previous:
            events.append((sample['t'], previous, sample['desired']))
        previous = sample['desired']
    return events


def reversals(events, window):
    """Direction changes less than `window` seconds apart."""
    flips = 0
    for (t1, a1, b1), (t2, a2, b2) in zip(events, events[1:]):
        if (b1 - a1) * (b2 - a2) < 0 and t2 - t1 < window:
            flips += 1
    return flips


def ramp(args, client, web, mode):
    autoscaler = client.services.get(args.autoscaler)
    scale_and_wait(autoscaler, 0)
    scale_and_wait(web, FIXED_REPLICAS)
    if mode == 'autoscaled':
        scale_and_wait(autoscaler, 1)
    sampler = Sampler(web)
    sampler.start()
    start, stages = time.time(), []
    for index, (rate, seconds) in enumerate(args.stages):
        sampler.stage = rate
        begun = time.time()
        run = load_stage(args, rate, seconds, '%s-%d' % (mode, index))
        seen = [s['desired'] for s in sampler.samples if s['t'] >= begun]
        stages.append({'offered_per_min': rate, 'seconds': seconds, 'start_s': round(begun - start, 1),
                       'end_s': round(time.time() - start, 1),
                       'purchases_per_min': run['purchases_per_min'], 'success_ratio': run['success_ratio'],
                       'purchase_p95_ms': run['purchase_p95_ms'], 'worst_request_p95_ms': run['worst_request_p95_ms'],
                       'replicas_min': min(seen, default=None), 'replicas_max': max(seen, default=None)})
        print('%-10s stage %d: offered %5.0f/min for %ds -> %6.1f/min, success %.4f, purchase p95 %6.0f ms, '
              'worst request p95 %6.0f ms, replicas %s..%s' % (
                  mode, index, rate, seconds, run['purchases_per_min'], run['success_ratio'],
                  run['purchase_p95_ms'], run['worst_request_p95_ms'], stages[-1]['replicas_min'],
                  stages[-1]['replicas_max']), flush=True)
    sampler.stopping.set()
    sampler.join()
    samples = [dict(s, t=round(s['t'] - start, 1)) for s in sampler.samples]
    events = scale_events(samples)
    return {'stages': stages, 'samples': samples, 'scale_events': events,
            'reversals_within_window': reversals(events, args.window)}


def plot(result, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8))
    for mode, style in (('autoscaled', '-'), ('fixed', '--')):
        if mode not in result:
            continue
        samples = result[mode]['samples']
        top.step([s['t'] / 60 for s in samples], [s['desired'] for s in samples], style, where='post',
                 label='pretix-web replicas (%s)' % mode)
    load = top.twinx()
    any_mode = next(iter(result.values()))
    for stage in any_mode['stages']:
        load.hlines(stage['offered_per_min'], stage['start_s'] / 60, stage['end_s'] / 60, colors='grey')
    load.set_ylabel('offered purchases/min (grey)')
    top.set_xlabel('minutes into the ramp')
    top.set_ylabel('replicas')
    top.set_ylim(0, max(s['desired'] for mode in result.values() for s in mode['samples']) + 1)
    top.yaxis.get_major_locator().set_params(integer=True)
    top.legend(loc='upper left')
    top.set_title('pretix-web replicas against the offered load')

    labels = ['%d: %.0f/min' % (i, s['offered_per_min']) for i, s in enumerate(any_mode['stages'])]
    width = 0.4
    for offset, mode in ((-width / 2, 'fixed'), (width / 2, 'autoscaled')):
        if mode in result:
            bottom.bar([i + offset for i in range(len(labels))],
                       [s['purchase_p95_ms'] for s in result[mode]['stages']], width, label=mode)
    bottom.set_xticks(range(len(labels)), labels)
    bottom.set_ylabel('purchase p95, ms')
    bottom.set_title('whole-checkout p95 per stage: fixed 2 replicas against the autoscaler')
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def require_matplotlib():
    """Fail before the ramp, not after half an hour of it, when the picture cannot be drawn."""
    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        sys.exit('matplotlib is missing: pip install -r benchmarks/requirements.txt')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stages', type=parse_stages, default=parse_stages('120:180,900:420,120:420'),
                        help='offered purchases/min:seconds, comma-separated')
    parser.add_argument('--scenario', default='web', choices=('web', 'api'))
    parser.add_argument('--modes', default='fixed,autoscaled')
    parser.add_argument('--web', default='pretix-web')
    parser.add_argument('--autoscaler', default='autoscaler')
    parser.add_argument('--window', type=int, default=300, help='the scale-down stabilisation window, s')
    args = parser.parse_args()
    require_matplotlib()

    client = docker.from_env()
    web = client.services.get(args.web)
    autoscaler = client.services.get(args.autoscaler)
    saved = (replicas(web)[0], replicas(autoscaler)[0])
    result = {}
    try:
        for mode in args.modes.split(','):
            result[mode] = ramp(args, client, web, mode)
            print('%s: %d scale events %s, %d reversals within %d s' % (
                mode, len(result[mode]['scale_events']),
                [(round(t), a, b) for t, a, b in result[mode]['scale_events']],
                result[mode]['reversals_within_window'], args.window), flush=True)
    finally:
        scale_and_wait(autoscaler, 0)
        scale_and_wait(web, saved[0])
        scale_and_wait(autoscaler, saved[1])
    os.makedirs(REPORTS, exist_ok=True)
    with open(os.path.join(REPORTS, 'autoscale_ramp.json'), 'w', encoding='utf-8') as handle:
        json.dump(result, handle, indent=1)
    plot(result, os.path.join(REPORTS, 'autoscale_ramp.png'))
    print('wrote reports/autoscale_ramp.json and reports/autoscale_ramp.png')


if __name__ == '__main__':
    main()
