"""playbooks/scale.yml and playbooks/heal.yml through ansible-playbook on the local inventory."""

from conftest import run_playbook, running_task_count, wait_for


def test_scale_playbook_scales_the_named_service(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=1)

    rc, output = run_playbook('scale.yml', '-e', 'replicas=2', '-e', 'service=%s' % name)

    assert rc == 0, output
    assert '%s: 1 -> 2 replicas, 2 running' % name in output
    assert running_task_count(docker_client, service_id) == 2


def test_scale_playbook_rejects_a_bad_count_before_touching_anything(docker_client, busybox_service):
    service_id, name = busybox_service(replicas=1)
    version = docker_client.api.inspect_service(service_id)['Version']['Index']

    for bad in ('replicas=abc', 'replicas=-1', 'replicas=51'):
        rc, output = run_playbook('scale.yml', '-e', bad, '-e', 'service=%s' % name)
        assert rc != 0, output
        assert 'Give the wanted replica count as an integer between 0 and 50' in output
    rc, output = run_playbook('scale.yml', '-e', 'service=%s' % name)
    assert rc != 0 and '(got nothing)' in output, output
    assert docker_client.api.inspect_service(service_id)['Version']['Index'] == version


def test_heal_playbook_check_mode_reports_without_acting(docker_client, busybox_service, unique_name):
    group = unique_name('heal')
    service_id, name = busybox_service(replicas=1, labels={'bxtest.group': group})
    wait_for(lambda: running_task_count(docker_client, service_id) == 1, message='1 replica')
    containers = docker_client.api.containers(filters={'label': 'com.docker.swarm.service.id=%s' % service_id})
    docker_client.api.kill(containers[0]['Id'])
    wait_for(lambda: any(t['Status']['State'] == 'failed'
                         for t in docker_client.api.tasks(filters={'service': service_id})),
             message='the killed task to be recorded as failed')

    rc, output = run_playbook('heal.yml', '--check', '-e', '{"heal_labels": {"bxtest.group": "%s"}}' % group)

    assert rc == 0, output
    assert '%s: unhealthy (would_redeploy); failed_tasks' % name in output
    assert docker_client.api.inspect_service(service_id)['Spec']['TaskTemplate'].get('ForceUpdate', 0) == 0
