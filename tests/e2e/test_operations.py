"""Operations on the deployed stack: scale.yml and heal.yml against the real pretix services.

Needs the stack from site.yml on this machine (scripts/test.sh deploys it first). Each test
leaves the stack as it found it: pretix-web back at its replica count, every task running.
"""

import re
import time

import pytest
import requests

from conftest import deployed_service, run_playbook, running_task_count, wait_for
from test_buy_ticket import BASE_URL, TLS_CA

WEB_SERVICE = 'pretix-web'
HEALTHCHECK = BASE_URL + '/healthcheck/'
# The in-swarm autoscaler and the seconds between its rounds (autoscale_service_interval).
AUTOSCALER = 'autoscaler'
AUTOSCALER_ROUND = 15


@pytest.fixture
def web_service(docker_client):
    service = deployed_service(docker_client, WEB_SERVICE)
    replicas = service['Spec']['Mode']['Replicated']['Replicas']
    wait_for(lambda: running_task_count(docker_client, service['ID']) == replicas, timeout=300,
             message='every %s replica running before the test' % WEB_SERVICE)
    return service['ID'], replicas


def shop_is_healthy():
    return requests.get(HEALTHCHECK, verify=TLS_CA, timeout=10).status_code == 200


def autoscaler_runs(client):
    return bool(client.api.services(filters={'name': AUTOSCALER}))


def test_scale_web_up_and_back(docker_client, web_service):
    service_id, replicas = web_service
    try:
        rc, output = run_playbook('scale.yml', '-e', 'replicas=%d' % (replicas + 1))
        assert rc == 0, output
        assert re.search(r'%s: %d -> %d replicas, %d running, converged in [0-9.]+s'
                         % (WEB_SERVICE, replicas, replicas + 1, replicas + 1), output), output
        if autoscaler_runs(docker_client):
            # The idle shop's autoscaler would scale web back to its minimum: the count set by
            # hand is recorded for it and outlasts its next rounds.
            time.sleep(AUTOSCALER_ROUND + 5)
            assert docker_client.api.inspect_service(service_id)['Spec']['Mode']['Replicated']['Replicas'] \
                == replicas + 1
        assert running_task_count(docker_client, service_id) == replicas + 1
        assert shop_is_healthy()
    finally:
        rc, output = run_playbook('scale.yml', '-e', 'replicas=%d' % replicas)
    assert rc == 0, output
    assert running_task_count(docker_client, service_id) == replicas

    rc, output = run_playbook('scale.yml', '-e', 'replicas=%d' % replicas)
    assert rc == 0 and 'changed=0' in output, output


def test_a_count_outside_the_autoscaler_rule_is_refused(docker_client, web_service):
    if not autoscaler_runs(docker_client):
        pytest.skip('the in-swarm autoscaler is off: no rule bounds the count')
    service_id, replicas = web_service
    version = docker_client.api.inspect_service(service_id)['Version']['Index']

    rc, output = run_playbook('scale.yml', '-e', 'replicas=1')

    assert rc != 0, output
    assert 'is scaled by the in-swarm autoscaler between 2 and 10 replicas' in output, output
    assert docker_client.api.inspect_service(service_id)['Version']['Index'] == version


@pytest.fixture
def badly_configured_service(docker_client, swarm_services, unique_name):
    """An nginx service of the stack's own image whose config nginx rejects: its tasks exit at once."""
    nginx = docker_client.api.inspect_service('nginx')['Spec']['TaskTemplate']['ContainerSpec']
    config = docker_client.configs.create(name=unique_name('bad-nginx-conf'),
                                          data=b'events {} http { this_is_not_a_directive on; }\n')
    swarm_services.after_removal.append(config.remove)
    name = unique_name('bad-nginx')
    service_id = swarm_services(name=name, labels={'boxoffice.component': 'bxtest'}, task_template={
        'ContainerSpec': {'Image': nginx['Image'], 'Configs': [{
            'File': {'Name': '/etc/nginx/nginx.conf', 'UID': '0', 'GID': '0', 'Mode': 0o444},
            'ConfigID': config.id, 'ConfigName': config.name}]}})
    wait_for(lambda: sum(t['Status']['State'] in ('failed', 'rejected')
                         for t in docker_client.api.tasks(filters={'service': service_id})) > 1,
             timeout=180, message='the badly configured service to fail repeatedly')
    return name


def test_heal_redeploys_a_killed_web_task_and_reports_a_broken_service(docker_client, web_service,
                                                                        badly_configured_service):
    service_id, replicas = web_service
    force_update = docker_client.api.inspect_service(service_id)['Spec']['TaskTemplate'].get('ForceUpdate', 0)
    victim = docker_client.api.containers(
        filters={'label': 'com.docker.swarm.service.name=%s' % WEB_SERVICE})[0]
    docker_client.api.kill(victim['Id'])
    wait_for(lambda: any(t['Status']['State'] == 'failed'
                         for t in docker_client.api.tasks(filters={'service': service_id})),
             message='the killed task to be recorded as failed')

    # Over the whole swarm, as an operator or the AWX schedule runs it.
    rc, output = run_playbook('heal.yml', '-e', 'heal_timeout=240')

    assert rc != 0, output
    # Other services on the shared swarm may be failing too: the name is one of a list.
    assert re.search(r'Still failing after a redeploy: [^.]*\b%s\b' % badly_configured_service, output), output
    assert re.search(r'%s: failed \(redeploy\);.*failed_tasks' % badly_configured_service, output), output
    assert re.search(r'%s: healed \(redeploy\);.*failed_tasks' % WEB_SERVICE, output), output
    # Data-tier members may carry failures of earlier crash tests; they are never restarted.
    untouched = re.findall(r"'([^' ]+): healthy \(none\);", output)
    assert {'nginx', 'pgpool', 'pg-0', 'pg-1', 'pg-2', 'redis-proxy'} <= set(untouched), output
    spec = docker_client.api.inspect_service(service_id)['Spec']
    assert spec['TaskTemplate'].get('ForceUpdate', 0) == force_update + 1
    assert running_task_count(docker_client, service_id) == replicas
    assert wait_for(shop_is_healthy, timeout=120, message='the shop to answer after the heal')
