"""boxoffice.pretix.swarm_service_heal, run through the real `ansible` CLI against this Swarm.

Every test selects only its own services (a unique label or stack name): healing the whole
swarm would touch services of other people working on the same engine.
"""

import time

import pytest

from conftest import run_ansible_module, running_task_count, wait_for

MODULE = 'boxoffice.pretix.swarm_service_heal'
SECOND = 10 ** 9


def force_update_counter(client, service_id):
    return client.api.inspect_service(service_id)['Spec']['TaskTemplate'].get('ForceUpdate', 0)


def kill_one_task_container(client, service_id, replicas):
    wait_for(lambda: running_task_count(client, service_id) == replicas,
             message='%d running replicas before the kill' % replicas)
    containers = client.api.containers(filters={'label': 'com.docker.swarm.service.id=%s' % service_id})
    client.api.kill(containers[0]['Id'])
    wait_for(lambda: any(t['Status']['State'] == 'failed'
                         for t in client.api.tasks(filters={'service': service_id})),
             message='Swarm to record the killed task as failed')


def by_name(result):
    return dict((s['name'], s) for s in result['services'])


def test_killed_task_is_healed_and_second_run_is_clean(docker_client, busybox_service, unique_name):
    group = {'bxtest.group': unique_name('heal')}
    service_id, name = busybox_service(replicas=2, labels=group)
    kill_one_task_container(docker_client, service_id, 2)
    counter = force_update_counter(docker_client, service_id)
    spec_before = docker_client.api.inspect_service(service_id)['Spec']

    healed = run_ansible_module(MODULE, {'labels': group, 'wait_timeout': 240})

    assert healed['rc'] == 0, healed
    assert healed['changed'] is True
    service = by_name(healed)[name]
    assert 'failed_tasks' in [f['kind'] for f in service['findings']]
    assert 'non-zero exit (137)' in str(service['findings'])
    assert (service['action'], service['result'], service['running_tasks']) == ('redeploy', 'healed', 2)
    assert healed['healed_services'] == [name] and healed['failed_services'] == []
    assert force_update_counter(docker_client, service_id) == counter + 1
    assert running_task_count(docker_client, service_id) == 2
    # A rolling force update: the spec is the same apart from the ForceUpdate counter.
    spec_after = docker_client.api.inspect_service(service_id)['Spec']
    spec_before['TaskTemplate']['ForceUpdate'] = counter + 1
    assert spec_after == spec_before

    again = run_ansible_module(MODULE, {'labels': group})
    assert again['rc'] == 0, again
    assert again['changed'] is False
    assert by_name(again)[name]['findings'] == []
    assert force_update_counter(docker_client, service_id) == counter + 1


def test_crash_looping_service_is_reported_failed(docker_client, busybox_service, unique_name):
    stack = unique_name('stack')
    healthy_id, healthy = busybox_service(name=stack + '_ok', replicas=1)
    broken_id, broken = busybox_service(name=stack + '_broken', replicas=1,
                                        command=('sh', '-c', 'exit 1'))
    wait_for(lambda: running_task_count(docker_client, healthy_id) == 1, message='healthy replica')
    wait_for(lambda: sum(t['Status']['State'] == 'failed'
                         for t in docker_client.api.tasks(filters={'service': broken_id})) > 2,
             message='the broken service to fail repeatedly')

    result = run_ansible_module(MODULE, {'stack': stack, 'restart_threshold': 2, 'wait_timeout': 60})

    assert result['rc'] != 0 and result.get('failed') is True, result
    assert 'Still failing after a redeploy: %s' % broken in result['msg']
    assert result['failed_services'] == [broken]
    services = by_name(result)
    kinds = [f['kind'] for f in services[broken]['findings']]
    assert 'failed_tasks' in kinds and 'restart_loop' in kinds
    assert services[broken]['action'] == 'redeploy' and services[broken]['result'] == 'failed'
    assert services[broken]['error']
    assert services[healthy] == dict(services[healthy], findings=[], action='none', result='healthy')
    assert force_update_counter(docker_client, healthy_id) == 0


def test_check_mode_acts_on_nothing(docker_client, busybox_service, unique_name):
    group = {'bxtest.group': unique_name('heal')}
    service_id, name = busybox_service(replicas=1, labels=group)
    kill_one_task_container(docker_client, service_id, 1)
    version = docker_client.api.inspect_service(service_id)['Version']['Index']

    result = run_ansible_module(MODULE, {'labels': group}, check=True)

    assert result['rc'] == 0, result
    assert result['changed'] is True
    service = by_name(result)[name]
    assert (service['action'], service['result']) == ('would_redeploy', 'unhealthy')
    assert docker_client.api.inspect_service(service_id)['Version']['Index'] == version
    assert force_update_counter(docker_client, service_id) == 0


def test_healthy_stack_is_unchanged(docker_client, busybox_service, unique_name):
    stack = unique_name('stack')
    service_id, name = busybox_service(replicas=2, labels={'com.docker.stack.namespace': stack},
                                       name=unique_name('labelled'))
    wait_for(lambda: running_task_count(docker_client, service_id) == 2, message='2 replicas')

    result = run_ansible_module(MODULE, {'stack': stack})

    assert result['rc'] == 0, result
    assert result['changed'] is False
    # Selected by the stack label although the name carries no stack prefix.
    assert [s['name'] for s in result['services']] == [name]
    assert result['services'][0]['result'] == 'healthy'


def failed_task_count(client, service_id):
    return sum(t['Status']['State'] in ('failed', 'rejected') for t in client.api.tasks(filters={'service': service_id}))


@pytest.mark.parametrize('failure_action, monitor', [
    # Swarm rolls the redeploy back, as it did with the restart-looping PostgreSQL member.
    ('rollback', 10),
    # Each task outlives the monitor window, so Swarm calls the redeploy's update completed.
    ('continue', 1),
], ids=['rolled-back', 'outlives-monitor'])
def test_crash_looping_service_fails_on_every_run(docker_client, swarm_services, busybox_image, unique_name,
                                                  failure_action, monitor):
    component = unique_name('db')
    name = unique_name('looping')
    service_id = swarm_services(
        name=name, labels={'boxoffice.component': component},
        task_template={'ContainerSpec': {'Image': busybox_image, 'Command': ['sh', '-c', 'sleep 3; exit 1'],
                                         'StopGracePeriod': SECOND},
                       'RestartPolicy': {'Condition': 'any', 'Delay': SECOND}},
        mode={'Replicated': {'Replicas': 1}}, endpoint_spec={'Mode': 'dnsrr'},
        update_config={'Parallelism': 1, 'Monitor': monitor * SECOND, 'FailureAction': failure_action,
                       'Order': 'stop-first'},
        rollback_config={'Parallelism': 1, 'Monitor': SECOND, 'Order': 'stop-first'})
    wait_for(lambda: failed_task_count(docker_client, service_id) > 2, timeout=120,
             message='the service to fail repeatedly')
    args = {'labels': {'boxoffice.component': component}, 'restart_threshold': 2, 'wait_timeout': 60,
            'hints': {component: 'clone <name> again'}}

    for run in ('first', 'second'):
        result = run_ansible_module(MODULE, args)

        assert result['rc'] != 0 and result.get('failed') is True, (run, result)
        assert result['failed_services'] == [name], (run, result)
        service = by_name(result)[name]
        assert service['result'] == 'failed' and service['error'], (run, service)
        kinds = [f['kind'] for f in service['findings']]
        # Before any redeploy the slot's task history shows the loop. Each redeploy (and its
        # rollback) pushes old failures out of Swarm's short history; the redeploy's own failed
        # task, newer than the update's start, still counts.
        assert 'restart_loop' in kinds if run == 'first' else 'failed_tasks' in kinds, (run, service)
        assert service['hint'] == 'clone %s again' % name
        assert 'What to do about %s: clone %s again.' % (name, name) in result['msg'], (run, result['msg'])


def test_service_healed_from_a_restart_loop_stays_green(docker_client, swarm_services, busybox_image,
                                                       unique_name, tmp_path):
    """A loop that ends (its dependency came back): healed once, then no finding on the next run."""
    group = {'bxtest.group': unique_name('heal')}
    name = unique_name('recovers')
    # Fails on its first three starts, then runs; the attempt count lives on the host.
    command = 'n=$(cat /state/n 2>/dev/null || echo 0); echo $((n + 1)) > /state/n; ' \
              '[ "$n" -ge 3 ] && exec sleep 86400; exit 1'
    service_id = swarm_services(
        name=name, labels=group,
        task_template={'ContainerSpec': {'Image': busybox_image, 'Command': ['sh', '-c', command],
                                         'StopGracePeriod': SECOND,
                                         'Mounts': [{'Type': 'bind', 'Source': str(tmp_path), 'Target': '/state'}]},
                       'RestartPolicy': {'Condition': 'any', 'Delay': SECOND},
                       'Placement': {'Constraints': ['node.id == %s' % docker_client.info()['Swarm']['NodeID']]}},
        mode={'Replicated': {'Replicas': 1}}, endpoint_spec={'Mode': 'dnsrr'},
        update_config={'Parallelism': 1, 'Monitor': SECOND, 'FailureAction': 'pause'})
    wait_for(lambda: failed_task_count(docker_client, service_id) == 3
             and running_task_count(docker_client, service_id) == 1, message='three failures, then a running task')

    healed = run_ansible_module(MODULE, {'labels': group, 'restart_threshold': 2, 'wait_timeout': 60})

    assert healed['rc'] == 0, healed
    service = by_name(healed)[name]
    assert (service['action'], service['result']) == ('redeploy', 'healed'), service
    assert 'failed_tasks' in [f['kind'] for f in service['findings']]

    again = run_ansible_module(MODULE, {'labels': group, 'restart_threshold': 2})
    assert again['rc'] == 0 and again['changed'] is False, again
    assert by_name(again)[name]['findings'] == [] and by_name(again)[name]['result'] == 'healthy'


@pytest.mark.parametrize('command, failing', [
    (['sh', '-c', 'exit 1'], True),
    (['sleep', '86000'], False),
], ids=['new-tasks-fail', 'normal-rollout'])
def test_rolling_update_under_way(docker_client, busybox_service, unique_name, command, failing):
    """Failing tasks in a rollout fail the run and are not redeployed; a normal rollout is left alone.

    The update waits a long Delay after its first slot, so it is still under way when heal runs.
    """
    group = {'bxtest.group': unique_name('heal')}
    service_id, name = busybox_service(replicas=2, labels=group)
    wait_for(lambda: running_task_count(docker_client, service_id) == 2, message='2 replicas')
    service = docker_client.api.inspect_service(service_id)
    spec = service['Spec']
    spec['TaskTemplate']['ContainerSpec']['Command'] = command
    docker_client.api.update_service(
        service_id, service['Version']['Index'], task_template=spec['TaskTemplate'], name=name, labels=group,
        mode=spec['Mode'], endpoint_spec=spec['EndpointSpec'],
        update_config=dict(spec['UpdateConfig'], Delay=300 * SECOND, FailureAction='continue'))

    def first_slot_replaced():
        tasks = docker_client.api.tasks(filters={'service': service_id})
        new = [t for t in tasks if t['Spec']['ContainerSpec']['Command'] == command]
        return any(t['Status']['State'] == ('failed' if failing else 'running') for t in new)
    wait_for(first_slot_replaced, message='the first slot of the rollout replaced')
    version = docker_client.api.inspect_service(service_id)['Version']['Index']

    result = run_ansible_module(MODULE, {'labels': group})

    found = by_name(result)[name]
    assert found['action'] == 'none', found
    if failing:
        assert result['rc'] != 0 and result['failed_services'] == [name], result
        assert found['result'] == 'failed' and 'failed_tasks' in [f['kind'] for f in found['findings']]
        assert 'keep failing while its rolling update is under way' in found['error']
        assert 'Failing, not redeployed: %s' % name in result['msg']
    else:
        assert result['rc'] == 0 and result['failed_services'] == [], result
        assert found['result'] in ('healthy', 'updating'), found
    after = docker_client.api.inspect_service(service_id)
    assert after['Version']['Index'] == version and after['UpdateStatus']['State'] == 'updating'


def test_over_replicated_service_is_found(docker_client, swarm_services, busybox_image, unique_name):
    """Tasks told to stop by a start-first rollout that keep running: 4 running for 2 desired.

    busybox sleep ignores SIGTERM, so the old tasks run through their 30 s stop grace period;
    with recent=3 they count as stuck after 3 s.
    """
    group = {'bxtest.group': unique_name('heal')}
    name = unique_name('crowded')
    task_template = {'ContainerSpec': {'Image': busybox_image, 'Command': ['sleep', '86400'],
                                       'StopGracePeriod': 30 * SECOND},
                     'RestartPolicy': {'Condition': 'any', 'Delay': SECOND}}
    service_id = swarm_services(
        name=name, labels=group, task_template=task_template, mode={'Replicated': {'Replicas': 2}},
        endpoint_spec={'Mode': 'dnsrr'},
        update_config={'Parallelism': 1, 'Monitor': SECOND, 'FailureAction': 'pause', 'Order': 'start-first'})
    wait_for(lambda: running_task_count(docker_client, service_id) == 2, message='2 replicas')
    service = docker_client.api.inspect_service(service_id)
    task_template['ContainerSpec']['StopGracePeriod'] = SECOND
    docker_client.api.update_service(service_id, service['Version']['Index'], task_template=task_template,
                                     name=name, labels=group, mode=service['Spec']['Mode'],
                                     update_config=service['Spec']['UpdateConfig'],
                                     endpoint_spec=service['Spec']['EndpointSpec'])

    def containers_running():
        return sum(t['Status']['State'] == 'running' for t in docker_client.api.tasks(filters={'service': service_id}))
    wait_for(lambda: (docker_client.api.inspect_service(service_id).get('UpdateStatus') or {}).get('State')
             == 'completed' and containers_running() == 4, message='the rollout done, old tasks still stopping')
    time.sleep(4)
    version = docker_client.api.inspect_service(service_id)['Version']['Index']

    result = run_ansible_module(MODULE, {'labels': group, 'recent': 3, 'wait_timeout': 30})

    assert result['rc'] != 0 and result['failed_services'] == [name], result
    found = by_name(result)[name]
    assert (found['desired'], found['running_tasks']) == (2, 2)
    assert found['findings'][0]['kind'] == 'over_replicated', found
    assert (found['findings'][0]['count'], found['findings'][0]['told_to_stop']) == (2, 2)
    assert found['findings'][0]['detail'].startswith('4 running for 2 desired')
    # A redeploy cannot stop a container already told to stop: nothing is redeployed.
    assert (found['action'], found['result']) == ('none', 'failed')
    assert 'told to stop' in found['error'] and 'Failing, not redeployed: %s' % name in result['msg']
    assert docker_client.api.inspect_service(service_id)['Version']['Index'] == version

    # Once their engine has stopped them (at the end of the grace period) the service is healthy.
    wait_for(lambda: containers_running() == 2, timeout=60, message='the old tasks to stop')
    again = run_ansible_module(MODULE, {'labels': group, 'recent': 3})
    assert again['rc'] == 0 and by_name(again)[name]['result'] == 'healthy', again
