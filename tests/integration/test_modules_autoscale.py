"""boxoffice.pretix.swarm_service_autoscale, run through the real `ansible` CLI against this Swarm.

The metric comes from the prometheus_stub fixture (tests/conftest.py): Prometheus' instant-query
API served by a Python http.server thread on 127.0.0.1, answering a value the test sets. Prometheus
itself is deployed by the monitoring role, a later part of issue 19; what this module needs of it
is that one HTTP endpoint, so the stub answers with the same JSON. The services are real Swarm
services, scaled and waited for, and the history label is read back from the engine.
"""

import json
import time

import pytest

from conftest import run_ansible_module, running_task_count, wait_for

MODULE = 'boxoffice.pretix.swarm_service_autoscale'
HISTORY_LABEL = 'boxoffice.autoscale.recommendations'
QUERY = 'avg(bxtest_load_per_replica)'


def args(stub, name, **overrides):
    return dict(dict(name=name, prometheus_url=stub.url, query=QUERY, target=1.0, min_replicas=1,
                     max_replicas=6), **overrides)


def inspect(client, service_id):
    return client.api.inspect_service(service_id)


def replicas_of(client, service_id):
    return inspect(client, service_id)['Spec']['Mode']['Replicated']['Replicas']


def history_of(client, service_id):
    """The recorded [[seconds, replicas], ...], or None without the label."""
    text = (inspect(client, service_id)['Spec'].get('Labels') or {}).get(HISTORY_LABEL)
    return None if text is None else json.loads(text)


def test_scale_up_within_the_step_limit(docker_client, busybox_service, prometheus_stub):
    service_id, name = busybox_service(replicas=1, labels={'bxtest.tier': 'web'})
    prometheus_stub.value = 5.0  # five times the target: 5 replicas recommended

    result = run_ansible_module(MODULE, args(prometheus_stub, name, scale_up_max_step=2,
                                             scale_up_max_percent=0), diff=True)

    assert result['rc'] == 0, result
    assert prometheus_stub.queries == [QUERY]
    assert result['changed'] is True
    assert (result['metric'], result['current_replicas'], result['recommendation'],
            result['desired_replicas'], result['applied_replicas']) == (5.0, 1, 5, 5, 3)
    assert 'scale-up limited to 3 this run (+2 or +0%)' in result['reason'], result['reason']
    assert result['diff'] == {'before': {name: 1}, 'after': {name: 3}}
    # Waited for: the new replicas run when the module returns.
    assert result['running_tasks'] == 3
    assert running_task_count(docker_client, service_id) == 3
    assert replicas_of(docker_client, service_id) == 3
    # The raw recommendation is recorded, stamped with the engine's clock; other labels are kept.
    [[stamp, recommended]] = history_of(docker_client, service_id)
    assert recommended == 5 and abs(stamp - time.time()) < 60
    assert result['history'] == [[stamp, 5]]
    assert inspect(docker_client, service_id)['Spec']['Labels']['bxtest.tier'] == 'web'

    # The next run goes on from 3 and stops at max_replicas.
    again = run_ansible_module(MODULE, args(prometheus_stub, name, scale_up_max_step=2,
                                            scale_up_max_percent=0, max_replicas=4))
    assert again['rc'] == 0, again
    assert (again['current_replicas'], again['recommendation'], again['applied_replicas']) == (3, 15, 4)
    assert 'diff' not in again
    assert replicas_of(docker_client, service_id) == 4
    assert [entry[1] for entry in history_of(docker_client, service_id)] == [5, 15]


def test_a_dip_inside_the_window_does_not_scale_down(docker_client, busybox_service, prometheus_stub):
    service_id, name = busybox_service(replicas=4)
    window = dict(scale_down_stabilization=300)

    prometheus_stub.value = 1.0
    steady = run_ansible_module(MODULE, args(prometheus_stub, name, **window))
    assert steady['rc'] == 0, steady
    assert (steady['changed'], steady['applied_replicas']) == (False, 4)
    assert 'within 10% of the target' in steady['reason']

    prometheus_stub.value = 0.25  # a quarter of the load: 1 replica recommended
    dip = run_ansible_module(MODULE, args(prometheus_stub, name, **window))
    assert dip['rc'] == 0, dip
    assert dip['changed'] is False
    assert (dip['recommendation'], dip['desired_replicas'], dip['applied_replicas']) == (1, 4, 4)
    assert 'so no scale-down yet' in dip['reason'], dip['reason']
    assert replicas_of(docker_client, service_id) == 4
    # The history came back from the label of the first run, not from anything on this host.
    assert [entry[1] for entry in history_of(docker_client, service_id)] == [4, 1]

    prometheus_stub.value = 1.0
    recovered = run_ansible_module(MODULE, args(prometheus_stub, name, **window))
    assert recovered['rc'] == 0, recovered
    assert (recovered['changed'], recovered['applied_replicas']) == (False, 4)
    assert running_task_count(docker_client, service_id) == 4


def test_a_low_that_outlasts_the_window_scales_down(docker_client, busybox_service, prometheus_stub):
    service_id, name = busybox_service(replicas=3)
    window = dict(scale_down_stabilization=15)

    prometheus_stub.value = 1.0
    assert run_ansible_module(MODULE, args(prometheus_stub, name, **window))['rc'] == 0
    prometheus_stub.value = 0.3
    held = run_ansible_module(MODULE, args(prometheus_stub, name, **window))
    assert (held['rc'], held['applied_replicas']) == (0, 3), held
    time.sleep(16)  # the recommendation of 3 is now older than the window

    low = run_ansible_module(MODULE, args(prometheus_stub, name, **window))

    assert low['rc'] == 0, low
    assert low['changed'] is True
    assert (low['recommendation'], low['applied_replicas'], low['running_tasks']) == (1, 1, 1)
    assert replicas_of(docker_client, service_id) == 1
    # Both earlier recommendations are older than the window now: only this run's is kept.
    assert [entry[1] for entry in history_of(docker_client, service_id)] == [1]


def test_check_mode_reports_the_decision_and_changes_nothing(docker_client, busybox_service, prometheus_stub):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']
    prometheus_stub.value = 3.0

    result = run_ansible_module(MODULE, args(prometheus_stub, name), check=True, diff=True)

    assert result['rc'] == 0, result
    assert result['changed'] is True
    assert (result['recommendation'], result['applied_replicas']) == (3, 3)
    assert result['diff'] == {'before': {name: 1}, 'after': {name: 3}}
    assert result['history'][0][1] == 3
    # Neither the count nor the history label was written.
    assert inspect(docker_client, service_id)['Version']['Index'] == version
    assert replicas_of(docker_client, service_id) == 1
    assert history_of(docker_client, service_id) is None


@pytest.mark.parametrize('answer, reason', [
    (None, 'the query returned no sample: no decision, 2 replicas kept'),
    ('NaN', 'the query returned NaN: no decision, 2 replicas kept'),
])
def test_missing_data_scales_nothing_and_records_nothing(docker_client, busybox_service, prometheus_stub,
                                                         answer, reason):
    service_id, name = busybox_service(replicas=2)
    version = inspect(docker_client, service_id)['Version']['Index']
    prometheus_stub.value = answer

    result = run_ansible_module(MODULE, args(prometheus_stub, name, min_replicas=3))

    assert result['rc'] == 0, result
    assert result['changed'] is False
    assert result['reason'] == reason
    assert (result['metric'], result['applied_replicas']) == (None, 2)
    assert inspect(docker_client, service_id)['Version']['Index'] == version


def test_nothing_is_written_during_a_rolling_update(docker_client, busybox_service, prometheus_stub):
    """A spec written mid-update would become the PreviousSpec that Swarm rolls back to."""
    service_id, name = busybox_service(replicas=2)
    service = inspect(docker_client, service_id)
    template = service['Spec']['TaskTemplate']
    template['ContainerSpec']['Command'] = ['sleep', '86401']
    # One task at a time with a minute between them: the update stays `updating` for the test.
    docker_client.api.update_service(
        service_id, service['Version']['Index'], task_template=template, name=name,
        mode=service['Spec']['Mode'], endpoint_spec=service['Spec'].get('EndpointSpec'),
        update_config={'Parallelism': 1, 'Delay': 60 * 10 ** 9, 'Monitor': 10 ** 9, 'FailureAction': 'pause'})
    wait_for(lambda: (inspect(docker_client, service_id).get('UpdateStatus') or {}).get('State') == 'updating',
             timeout=60, message='the rolling update of %s to start' % name)
    prometheus_stub.value = 3.0

    result = run_ansible_module(MODULE, args(prometheus_stub, name))

    assert result['rc'] == 0, result
    assert result['changed'] is False
    assert result['reason'].startswith("the service's update is updating"), result['reason']
    assert prometheus_stub.queries == []
    # Swarm itself writes the service's UpdateStatus meanwhile, so the spec is compared, not its version.
    assert replicas_of(docker_client, service_id) == 2
    assert history_of(docker_client, service_id) is None


@pytest.mark.parametrize('overrides, message', [
    ({'target': 0}, 'target must be a number above 0, got 0.0'),
    ({'target': -1}, 'target must be a number above 0'),
    ({'min_replicas': 5, 'max_replicas': 2}, 'min_replicas (5) must not be above max_replicas (2)'),
])
def test_bad_settings_fail_before_anything_is_read(docker_client, busybox_service, prometheus_stub,
                                                    overrides, message):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']
    prometheus_stub.value = 4.0

    result = run_ansible_module(MODULE, args(prometheus_stub, name, **overrides))

    assert result['rc'] != 0 and result.get('failed') is True, result
    assert message in result['msg'] and 'Nothing was changed.' in result['msg']
    assert prometheus_stub.queries == []
    assert inspect(docker_client, service_id)['Version']['Index'] == version


def test_a_query_with_many_samples_fails_and_changes_nothing(docker_client, busybox_service, prometheus_stub):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']
    prometheus_stub.body = json.dumps({'status': 'success', 'data': {'resultType': 'vector', 'result': [
        {'metric': {'task': 'a'}, 'value': [0, '1']}, {'metric': {'task': 'b'}, 'value': [0, '2']}]}})

    result = run_ansible_module(MODULE, args(prometheus_stub, name))

    assert result['rc'] != 0, result
    assert 'the query returned 2 samples' in result['msg'] and 'Query: %s' % QUERY in result['msg']
    assert inspect(docker_client, service_id)['Version']['Index'] == version


def test_global_service_is_refused(docker_client, busybox_service, prometheus_stub):
    dummy, name = busybox_service(mode={'Global': {}})
    prometheus_stub.value = 2.0

    result = run_ansible_module(MODULE, args(prometheus_stub, name))

    assert result['rc'] != 0, result
    assert 'Only replicated services can be autoscaled; refusing %s (global)' % name in result['msg']
