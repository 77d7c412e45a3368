"""The deployed monitoring tier (roles/monitoring) and the in-swarm autoscaler (roles/autoscale),
read the way an operator reads them: through nginx, with the UI's basic auth.

- Prometheus scrapes every tier, found through Swarm discovery, and every target is up.
- The recording rules the dashboard and the autoscaler read have values.
- No critical alert fires on the healthy stack, and Alertmanager knows the rules' alerts.
- The dashboard page renders its panels; without the password nginx refuses it.
- The autoscaler service decides on pretix-web with a real metric from Prometheus.
The fault-to-notification path is tests/chaos/test_alerts.py (slow).
"""

import json
import time

import pytest

from conftest import wait_for

# Every scrape job, with the least number of targets it has on the one-machine stack.
EXPECTED_JOBS = {
    'prometheus': 1, 'alertmanager': 1, 'node-exporter': 1, 'postgres-exporter': 3, 'redis': 3,
    'sentinel': 3, 'redis-proxy': 1, 'nginx-exporter': 1, 'pretix': 1, 'shop': 1,
}
DASHBOARD = '/consoles/boxoffice.html'


def query(prometheus, promql):
    answer = prometheus.get('/api/v1/query', query=promql).json()
    assert answer['status'] == 'success', answer
    return answer['data']['result']


def test_every_tier_is_scraped_and_up(prometheus):
    def targets():
        active = prometheus.get('/api/v1/targets', state='active').json()['data']['activeTargets']
        return [(t['labels'].get('job'), t['labels'].get('instance'), t['health'], t['lastError'])
                for t in active]

    def all_up():
        seen = targets()
        jobs = {}
        for job, _, health, _ in seen:
            if health == 'up':
                jobs[job] = jobs.get(job, 0) + 1
        return all(jobs.get(job, 0) >= count for job, count in EXPECTED_JOBS.items()) and \
            all(health == 'up' for job, _, health, _ in seen if job != 'swarm-tasks')

    # A target found after a recent deploy is scraped within one interval (15 s).
    wait_for(all_up, timeout=120, message='every target up: %s' % json.dumps(
        [t for t in targets() if t[2] != 'up']))


def test_the_recorded_series_have_values(prometheus):
    for series in ('boxoffice:postgres_primaries:count', 'boxoffice:redis_masters:count',
                   'boxoffice:redis_sentinels_up:count', 'boxoffice:service_tasks:running',
                   'boxoffice:pretix_web_workers:busy_ratio'):
        wait_for(lambda series=series: query(prometheus, series), timeout=120, message=series)
    assert float(query(prometheus, 'boxoffice:postgres_primaries:count')[0]['value'][1]) == 1
    assert float(query(prometheus, 'boxoffice:redis_masters:count')[0]['value'][1]) == 1


def test_no_critical_alert_fires_and_alertmanager_is_wired(prometheus):
    rules = prometheus.get('/api/v1/rules', type='alert').json()['data']['groups']
    names = {rule['name'] for group in rules for rule in group['rules']}
    assert {'PostgresNoPrimary', 'PostgresFailover', 'RedisMasterCount', 'ServiceUnderReplicas'} <= names
    firing = [a['labels'] for a in prometheus.get('/api/v1/alerts').json()['data']['alerts']
              if a['state'] == 'firing' and a['labels'].get('severity') == 'critical']
    assert firing == []
    managers = prometheus.get('/api/v1/alertmanagers').json()['data']['activeAlertmanagers']
    assert managers, 'Prometheus has no Alertmanager to send alerts to'


def test_the_dashboard_renders_behind_the_password(prometheus):
    page = prometheus.get(DASHBOARD)
    assert page.status_code == 200
    for panel in ('Sales', 'Checkout latency', 'Server errors', 'Replicas per service'):
        assert panel in page.text
    assert prometheus.get(DASHBOARD, auth=False).status_code == 401


def test_the_autoscaler_decides_on_pretix_web(docker_client):
    service = docker_client.services.get('autoscaler')
    since = int(time.time())

    def decision():
        logs = b''.join(service.logs(stdout=True, stderr=True, since=since)).decode(errors='replace')
        for text in logs.splitlines():
            try:
                record = json.loads(text[text.index('{'):])
            except ValueError:
                continue
            if record.get('event') == 'decision' and record.get('name') == 'pretix-web':
                return record
        return None

    record = wait_for(decision, timeout=90, message='a decision of the autoscaler on pretix-web')
    assert record['metric'] is not None, record
    assert 2 <= record['applied_replicas'] <= 10, record
