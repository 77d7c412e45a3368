"""boxoffice.pretix.swarm_service_heal, run through the real `ansible` CLI against this Swarm.

Every test selects only its own services (a unique label or stack name): healing the whole
swarm would touch services of other people working on the same engine.
"""

from conftest import run_ansible_module, running_task_count, wait_for

MODULE = 'boxoffice.pretix.swarm_service_heal'


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

    healed = run_ansible_module(MODULE, {'labels': group, 'timeout': 240})

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

    result = run_ansible_module(MODULE, {'stack': stack, 'restart_threshold': 2, 'timeout': 60})

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
