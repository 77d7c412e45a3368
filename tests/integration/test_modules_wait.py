"""boxoffice.pretix.swarm_service_wait, run through the real `ansible` CLI against this Swarm."""

from conftest import run_ansible_module, running_task_count

MODULE = 'boxoffice.pretix.swarm_service_wait'
SECOND = 10 ** 9


def busybox_job(swarm_services, image, name, command):
    """A replicated job as the pretix role defines its migration: one task, never restarted."""
    return swarm_services(
        name=name, mode={'ReplicatedJob': {'MaxConcurrent': 1, 'TotalCompletions': 1}},
        task_template={'ContainerSpec': {'Image': image, 'Command': list(command), 'StopGracePeriod': SECOND},
                       'RestartPolicy': {'Condition': 'none'}})


def rerun_job(client, service_id, command):
    """Redefine the job as docker_swarm_service would: a changed spec starts a new run."""
    service = client.api.inspect_service(service_id)
    template = service['Spec']['TaskTemplate']
    template['ContainerSpec']['Command'] = list(command)
    template['ForceUpdate'] = int(template.get('ForceUpdate') or 0) + 1
    client.api.update_service(service_id, service['Version']['Index'], task_template=template,
                              name=service['Spec']['Name'], mode=service['Spec']['Mode'])


def test_a_new_job_run_is_told_apart_from_the_one_before(docker_client, swarm_services, busybox_image,
                                                         unique_name):
    name = unique_name('job')
    service_id = busybox_job(swarm_services, busybox_image, name, ['sleep', '1'])

    first = run_ansible_module(MODULE, {'name': name, 'wait_timeout': 120})
    assert first['rc'] == 0, first
    assert first['changed'] is False
    assert first['mode'] == 'replicated-job'
    assert (first['run']['state'], first['run']['completed'], first['run']['wanted']) == ('complete', 1, 1)

    before = run_ansible_module(MODULE, {'name': name, 'wait': False})
    assert before['run'] == first['run']

    # The next run fails; waiting past the completed run must report that failure, not the success.
    rerun_job(docker_client, service_id, ['sh', '-c', 'sleep 1; exit 3'])
    failed = run_ansible_module(MODULE, {'name': name, 'previous_run': before['run']['iteration'],
                                         'wait_timeout': 120}, check=True)
    assert failed['rc'] != 0, failed
    assert failed['run']['iteration'] > before['run']['iteration']
    assert failed['run']['state'] == 'failed'
    assert failed['run']['task_id'] != before['run']['task_id']
    assert failed['msg'].startswith('Run %d of job %s failed: task ' % (failed['run']['iteration'], name))
    assert 'non-zero exit (3)' in failed['msg']


def test_a_missing_service_is_reported_only_when_not_waiting(unique_name):
    name = unique_name('absent')
    read = run_ansible_module(MODULE, {'name': name, 'wait': False})
    assert read['rc'] == 0, read
    assert read['exists'] is False

    waited = run_ansible_module(MODULE, {'name': name, 'wait_timeout': 5})
    assert waited['rc'] != 0
    assert waited['msg'] == 'Service %s does not exist; nothing to wait for.' % name


def test_a_service_is_waited_for_until_its_replicas_run(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=2)

    result = run_ansible_module(MODULE, {'name': name, 'wait_timeout': 120})

    assert result['rc'] == 0, result
    assert (result['mode'], result['desired'], result['running_tasks']) == ('replicated', 2, 2)
    assert running_task_count(docker_client, service_id) == 2
