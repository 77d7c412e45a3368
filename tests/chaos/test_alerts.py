"""Fault to notification: real faults on the deployed stack, the alerts at a real webhook (issue 19).

A webhook receiver listens on this machine's docker_gwbridge address, which the Alertmanager task
reaches from its overlay network; the monitoring play points Alertmanager at it for the module
and back at the inventory's receiver afterwards. Three faults, one after the other, each from
full redundancy:

- the PostgreSQL primary SIGKILLed: PostgresFailover;
- a standby made to crash-loop (SIGKILLed again each time it answers): PostgresMemberRestarting;
- a sentinel stopped (scaled to 0, so that it stays down as a crashed sentinel on a lost node
  would; Swarm restarts a killed one within seconds): RedisMemberDown.

For each: the seconds from the fault to the firing notification at the receiver, and then from
the recovery (full redundancy again) to the resolved one. The alerts with a window (failover
5 minutes, restarts 15 minutes) resolve when it has passed, so the module takes about 20
minutes. The record goes to reports/alerts.jsonl and is printed as a table.
"""

import http.server
import json
import os
import threading
import time

import docker
import pytest

import chaoslib
from conftest import run_playbook, wait_for

pytestmark = pytest.mark.slow

REPORT = os.path.join(chaoslib.REPO_ROOT, 'reports', 'alerts.jsonl')
FIRING_TIMEOUT = 300
# The longest window of the alerts below (PostgresMemberRestarting: 15 minutes), plus Prometheus'
# evaluation and Alertmanager's group interval.
RESOLVED_TIMEOUT = 17 * 60
RESTARTS = 3


class Receiver(http.server.ThreadingHTTPServer):
    """Alertmanager's webhook: keeps (arrival time, alert name, status, labels) of every alert."""

    def __init__(self, address):
        super().__init__((address, 0), ReceiverHandler)
        self.url = 'http://%s:%d/' % self.server_address
        self.notifications = []
        self.lock = threading.Lock()

    def first(self, alertname, status, since, **labels):
        with self.lock:
            for arrived, name, state, alert_labels in self.notifications:
                if (arrived >= since and name == alertname and state == status
                        and all(alert_labels.get(k) == v for k, v in labels.items())):
                    return arrived
        return None

    def wait(self, alertname, status, since, timeout, **labels):
        def received():
            with self.lock:
                seen = sorted({(name, state) for _, name, state, _ in self.notifications})
            return 'a %s notification of %s (received: %s)' % (status, alertname, seen)
        return wait_for(lambda: self.first(alertname, status, since, **labels), timeout=timeout,
                        message=received, interval=1)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802  (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))))
        arrived = time.time()
        with self.server.lock:
            for alert in body.get('alerts', []):
                labels = alert.get('labels', {})
                self.server.notifications.append((arrived, labels.get('alertname'), alert.get('status'), labels))
        self.send_response(200)
        self.end_headers()


def gateway_address():
    network = docker.from_env().networks.get('docker_gwbridge')
    return network.attrs['IPAM']['Config'][0]['Gateway']


@pytest.fixture(scope='module')
def receiver():
    server = Receiver(gateway_address())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code, out = run_playbook('playbooks/monitoring.yml', '-e', 'monitoring_alert_webhook_url=' + server.url)
    assert code == 0, out[-3000:]
    yield server
    code, out = run_playbook('playbooks/monitoring.yml')
    server.shutdown()
    server.server_close()
    assert code == 0, 'restoring the inventory\'s receiver failed:\n' + out[-3000:]


@pytest.fixture(scope='module')
def target():
    return chaoslib.local_target()


@pytest.fixture(scope='module')
def records():
    collected = []
    yield collected
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, 'a', encoding='utf-8') as handle:
        for record in collected:
            handle.write(json.dumps(record) + '\n')
    print('\n| fault | alert | fault to firing s | recovered to resolved s |\n|---|---|---|---|')
    for record in collected:
        print('| %(fault)s | %(alert)s | %(firing_s)s | %(resolved_s)s |' % record)


def full_redundancy(target):
    """Waits for full redundancy; returns when it was reached, on the receiver's clock."""
    seconds, problems = chaoslib.wait_full_redundancy(target, 300)
    assert seconds is not None, 'no full redundancy within 300 s: %s' % problems
    return time.time()


def crash_loop(target, member, restarts):
    """SIGKILL `member` each time it answers again, `restarts` times: PostgreSQL starts, then dies."""
    for _ in range(restarts):
        deadline = time.time() + 180
        while chaoslib.pg_state(target, member) is None:
            assert time.time() < deadline, '%s did not answer within 180 s' % member
            time.sleep(1)
        # Up long enough to be scraped (15 s), so that each start is seen.
        time.sleep(20)
        chaoslib.kill_task(target, member)


def test_fault_to_alert_and_back(receiver, target, records):
    full_redundancy(target)
    pending = []

    fault_at = time.time()
    killed = chaoslib.kill_pg_primary(target)[0]['service']
    fired = receiver.wait('PostgresFailover', 'firing', fault_at, FIRING_TIMEOUT)
    pending.append(dict(fault='PostgreSQL primary %s SIGKILL' % killed, alert='PostgresFailover',
                        firing_s=round(fired - fault_at, 1), recovered_at=full_redundancy(target),
                        labels={}))

    standby = next(m for m, s in chaoslib.pg_states(target).items() if s and not s['primary'])
    fault_at = time.time()
    crash_loop(target, standby, RESTARTS)
    fired = receiver.wait('PostgresMemberRestarting', 'firing', fault_at, FIRING_TIMEOUT, member=standby)
    pending.append(dict(fault='standby %s crash-looping (%d SIGKILLs)' % (standby, RESTARTS),
                        alert='PostgresMemberRestarting', firing_s=round(fired - fault_at, 1),
                        recovered_at=full_redundancy(target), labels={'member': standby}))

    sentinel = chaoslib.SENTINELS[1]
    service = docker.from_env().services.get(sentinel)
    fault_at = time.time()
    service.scale(0)
    try:
        fired = receiver.wait('RedisMemberDown', 'firing', fault_at, FIRING_TIMEOUT, job='sentinel')
    finally:
        service.reload()  # scale() sends the version it read; the scale to 0 moved it on
        service.scale(1)
    pending.append(dict(fault='sentinel %s stopped' % sentinel, alert='RedisMemberDown',
                        firing_s=round(fired - fault_at, 1), recovered_at=full_redundancy(target),
                        labels={'job': 'sentinel'}))

    for case in pending:
        print('%(fault)s: %(alert)s fired after %(firing_s)s s' % case, flush=True)
    for case in pending:
        resolved = receiver.wait(case['alert'], 'resolved', case['recovered_at'], RESOLVED_TIMEOUT,
                                 **case['labels'])
        records.append(dict(fault=case['fault'], alert=case['alert'], firing_s=case['firing_s'],
                            resolved_s=round(resolved - case['recovered_at'], 1)))
