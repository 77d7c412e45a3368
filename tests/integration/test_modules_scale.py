"""boxoffice.pretix.swarm_service_scale, run through the real `ansible` CLI against this Swarm."""

import json
import subprocess
import threading
import time

import pytest

from conftest import run_ansible_module, running_task_count

MODULE = 'boxoffice.pretix.swarm_service_scale'
SYSTEM_PYTHON = '/usr/bin/python3'
SYSTEM_PYTHON_HAS_DOCKER = subprocess.run(
    [SYSTEM_PYTHON, '-c', 'import docker'], check=False, capture_output=True).returncode == 0


def replicas_of(client, service_id):
    return client.api.inspect_service(service_id)['Spec']['Mode']['Replicated']['Replicas']


def spec_version(client, service_id):
    return client.api.inspect_service(service_id)['Version']['Index']


def test_scale_up_then_down_waits_for_running_tasks(docker_client, busybox_service, overlay_network):
    # A spec with the parts the stack's services carry, to see that scaling keeps them.
    service_id, name = busybox_service(
        replicas=1, labels={'bxtest.tier': 'web'}, Networks=[{'Target': overlay_network, 'Aliases': ['web']}],
        Resources={'Limits': {'MemoryBytes': 64 * 1024 * 1024}})
    spec_before = docker_client.api.inspect_service(service_id)['Spec']

    up = run_ansible_module(MODULE, {'name': name, 'replicas': 3}, diff=True)
    assert up['rc'] == 0, up
    assert up['changed'] is True
    assert up['services'] == [dict(up['services'][0], name=name, previous_replicas=1, replicas=3,
                                   running_tasks=3, changed=True)]
    assert up['diff'] == {'before': {name: 1}, 'after': {name: 3}}
    assert replicas_of(docker_client, service_id) == 3
    # Only the replica count changed; everything else in the spec is kept as deployed.
    spec_after = docker_client.api.inspect_service(service_id)['Spec']
    assert spec_after == dict(spec_before, Mode={'Replicated': {'Replicas': 3}})
    # The module returned only once the tasks ran, so they are running now without any wait.
    assert running_task_count(docker_client, service_id) == 3

    down = run_ansible_module(MODULE, {'name': name, 'replicas': 1})
    assert down['rc'] == 0, down
    assert down['changed'] is True
    assert down['services'][0]['previous_replicas'] == 3
    # Not run in diff mode, so no diff is built.
    assert 'diff' not in down
    assert down['services'][0]['running_tasks'] == 1
    assert running_task_count(docker_client, service_id) == 1


def test_same_count_is_unchanged_but_still_verified(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=2)
    version = spec_version(docker_client, service_id)

    result = run_ansible_module(MODULE, {'name': name, 'replicas': 2})

    assert result['rc'] == 0, result
    assert result['changed'] is False
    assert result['services'][0]['changed'] is False
    # wait=true confirms the replicas, even on a freshly created service still starting them.
    assert result['services'][0]['running_tasks'] == 2
    assert spec_version(docker_client, service_id) == version


def test_check_mode_reports_but_changes_nothing(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=1)
    version = spec_version(docker_client, service_id)

    result = run_ansible_module(MODULE, {'name': name, 'replicas': 4}, check=True, diff=True)

    assert result['rc'] == 0, result
    assert result['changed'] is True
    assert result['diff'] == {'before': {name: 1}, 'after': {name: 4}}
    assert spec_version(docker_client, service_id) == version
    assert replicas_of(docker_client, service_id) == 1


def test_stack_names_are_prefixed(docker_client, busybox_service, unique_name):
    stack = unique_name('stack')
    web_id, _ = busybox_service(name=stack + '_web', replicas=1)
    worker_id, _ = busybox_service(name=stack + '_worker', replicas=1)

    result = run_ansible_module(MODULE, {'stack': stack, 'names': ['web', 'worker'], 'replicas': 2})

    assert result['rc'] == 0, result
    assert [s['name'] for s in result['services']] == [stack + '_web', stack + '_worker']
    assert replicas_of(docker_client, web_id) == replicas_of(docker_client, worker_id) == 2


@pytest.mark.parametrize('args, message', [
    ({'replicas': -1}, 'replicas must be 0 or more'),
    ({'replicas': 6, 'max_replicas': 5}, 'outside the allowed range 0..5'),
    ({'replicas': 1, 'min_replicas': 2}, 'outside the allowed range 2..unbounded'),
    ({'replicas': 3, 'min_replicas': 4, 'max_replicas': 2}, 'must be >= 0 and <= max_replicas'),
])
def test_bad_counts_are_refused(docker_client, busybox_service, args, message):
    service_id, name = busybox_service(replicas=1)
    version = spec_version(docker_client, service_id)

    result = run_ansible_module(MODULE, dict(args, name=name))

    assert result['rc'] != 0 and result.get('failed') is True, result
    assert message in result['msg']
    assert spec_version(docker_client, service_id) == version


def test_unknown_service_lists_existing_and_changes_nothing(docker_client, busybox_service, unique_name):
    stack = unique_name('stack')
    web_id, _ = busybox_service(name=stack + '_web', replicas=1)
    busybox_service(name=stack + '_worker', replicas=1)
    version = spec_version(docker_client, web_id)

    # The good service comes first: it must not be scaled before the bad one is noticed.
    result = run_ansible_module(MODULE, {'stack': stack, 'name': ['web', 'nope'], 'replicas': 2})

    assert result['rc'] != 0, result
    assert 'Unknown service(s): %s_nope' % stack in result['msg']
    assert 'Existing services in stack %s: %s_web, %s_worker' % (stack, stack, stack) in result['msg']
    assert spec_version(docker_client, web_id) == version
    assert replicas_of(docker_client, web_id) == 1


def test_global_service_is_refused_and_nothing_changes(docker_client, busybox_service):
    replicated_id, replicated = busybox_service(replicas=1)
    _, global_name = busybox_service(mode={'Global': {}})
    version = spec_version(docker_client, replicated_id)

    result = run_ansible_module(MODULE, {'names': [replicated, global_name], 'replicas': 2})

    assert result['rc'] != 0, result
    assert 'refusing %s (global)' % global_name in result['msg']
    assert spec_version(docker_client, replicated_id) == version


def test_service_that_cannot_run_fails_with_timeout(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=1, command=('sh', '-c', 'exit 1'))

    result = run_ansible_module(MODULE, {'name': name, 'replicas': 2, 'wait_timeout': 20})

    assert result['rc'] != 0, result
    assert 'did not converge within 20s' in result['msg']
    # The change itself was made and is reported as such, not hidden behind the failure.
    assert result['changed'] is True
    assert result['services'][0]['previous_replicas'] == 1
    assert replicas_of(docker_client, service_id) == 2


HISTORY_LABEL = 'boxoffice.autoscale.recommendations'


def test_autoscale_hold_records_the_count_for_the_autoscaler(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=1, labels={'bxtest.tier': 'web'})

    before = time.time()
    result = run_ansible_module(MODULE, {'name': name, 'replicas': 2, 'autoscale_hold': True})

    assert result['rc'] == 0 and result['changed'] is True, result
    labels = docker_client.api.inspect_service(service_id)['Spec']['Labels']
    (stamp, replicas), = json.loads(labels[HISTORY_LABEL])
    assert replicas == 2 and before - 5 <= stamp <= time.time() + 5
    assert labels['bxtest.tier'] == 'web'

    # The same count again changes nothing, label included.
    version = spec_version(docker_client, service_id)
    again = run_ansible_module(MODULE, {'name': name, 'replicas': 2, 'autoscale_hold': True})
    assert again['rc'] == 0 and again['changed'] is False, again
    assert spec_version(docker_client, service_id) == version


def test_a_count_changed_by_another_writer_fails_the_wait_at_once(docker_client, busybox_service):
    # Tasks that no node can take: the module waits for 3 that never run, until the other writer
    # (an autoscaler here) sets the count to 1.
    service_id, name = busybox_service(replicas=1, Placement={'Constraints': ['node.labels.bxtest_none==1']})

    def autoscaler():
        deadline = time.monotonic() + 60
        while replicas_of(docker_client, service_id) != 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        service = docker_client.api.inspect_service(service_id)
        spec = service['Spec']
        docker_client.api.update_service(service_id, service['Version']['Index'], name=spec['Name'],
                                         task_template=spec['TaskTemplate'], labels=spec['Labels'],
                                         mode={'Replicated': {'Replicas': 1}},
                                         update_config=spec['UpdateConfig'], endpoint_spec=spec['EndpointSpec'])
    writer = threading.Thread(target=autoscaler)
    writer.start()
    started = time.monotonic()
    result = run_ansible_module(MODULE, {'name': name, 'replicas': 3, 'wait_timeout': 300})
    writer.join()

    assert result['rc'] != 0, result
    assert 'was set to 1 replicas by another writer while this waited for 3' in result['msg'], result
    assert time.monotonic() - started < 60
    assert replicas_of(docker_client, service_id) == 1


def redeploy(client, service_id, command, failure_action='rollback'):
    """Change the service's command the way community.docker.docker_swarm_service does: no wait."""
    service = client.api.inspect_service(service_id)
    template = service['Spec']['TaskTemplate']
    template['ContainerSpec']['Command'] = list(command)
    client.api.update_service(
        service_id, service['Version']['Index'], task_template=template, name=service['Spec']['Name'],
        mode=service['Spec']['Mode'], endpoint_spec=service['Spec'].get('EndpointSpec'),
        update_config={'Parallelism': 1, 'Monitor': 2 * 10 ** 9, 'FailureAction': failure_action})


def test_rollout_waits_for_the_new_spec(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=2)
    run_ansible_module(MODULE, {'name': name, 'replicas': 2})
    redeploy(docker_client, service_id, ('sleep', '86401'))

    result = run_ansible_module(MODULE, {'name': name, 'replicas': 2, 'rollout': True, 'wait_timeout': 120})

    assert result['rc'] == 0, result
    assert result['changed'] is False
    service = docker_client.api.inspect_service(service_id)
    assert service['UpdateStatus']['State'] == 'completed'
    running = [task for task in docker_client.api.tasks(filters={'service': service_id, 'desired-state': 'running'})
               if task['Status']['State'] == 'running']
    assert [task['Spec']['ContainerSpec']['Command'] for task in running] == [['sleep', '86401']] * 2


def test_rollout_that_swarm_rolled_back_fails_with_the_task_errors(docker_client, busybox_service):
    """Swarm rolls back a failing update and the old tasks run on: only rollout=true sees it."""
    service_id, name = busybox_service(replicas=1)
    run_ansible_module(MODULE, {'name': name, 'replicas': 1})
    redeploy(docker_client, service_id, ('sh', '-c', 'exit 3'))

    result = run_ansible_module(MODULE, {'name': name, 'replicas': 1, 'rollout': True, 'wait_timeout': 120})

    assert result['rc'] != 0, result
    # The module reports the rollback once Swarm has finished it, not while it is still under way.
    assert 'did not converge: update status is rollback_completed' in result['msg'], result['msg']
    assert 'Newest task errors: task ' in result['msg'] and 'non-zero exit (3)' in result['msg'], result['msg']
    assert docker_client.api.inspect_service(service_id)['UpdateStatus']['State'] == 'rollback_completed'
    # Without rollout the rolled-back service counts as converged: its old task runs.
    plain = run_ansible_module(MODULE, {'name': name, 'replicas': 1, 'wait_timeout': 120})
    assert plain['rc'] == 0, plain


@pytest.mark.skipif(SYSTEM_PYTHON_HAS_DOCKER,
                    reason='%s can import docker, so it cannot show the missing-library error'
                    % SYSTEM_PYTHON)
def test_missing_library_message_names_the_sdk():
    """The system Python has no Docker SDK: the error must say what to install."""
    result = run_ansible_module(MODULE, {'name': 'x', 'replicas': 1}, python=SYSTEM_PYTHON)
    assert result['rc'] != 0, result
    assert 'docker (the Docker SDK for Python' in result['msg']
