"""boxoffice.pretix.swarm_service_autoscale, run through the real `ansible` CLI against this Swarm
and the stack's real Prometheus.

The metric is set by the PromQL itself, which the Prometheus that site.yml deploys evaluates (the
`prometheus` fixture in tests/conftest.py: https://localhost/monitoring/prometheus through nginx,
its basic auth and self-signed certificate): `vector(5)` is one sample of 5, `vector(1) == 2`
filters that sample away (an empty vector), `vector(NaN)` and `vector(+Inf)` are samples nothing
may be scaled on. The services are real Swarm services, scaled and waited for, and the history
label is read back from the engine.
"""

import json
import re
import time

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale import AutoscaleError
from ansible_collections.boxoffice.pretix.plugins.module_utils import autoscale_run as autoscale
from conftest import run_ansible_module, running_task_count, wait_for

MODULE = 'boxoffice.pretix.swarm_service_autoscale'
HISTORY_LABEL = 'boxoffice.autoscale.recommendations'
# PromQL that Prometheus refuses to parse (HTTP 400 with its JSON error): if the module sent it,
# the run would fail, so a run that does not fail on it has not asked Prometheus anything.
UNPARSABLE_QUERY = 'vector(3'
# Two series, {a="x"} 1 and {a="y"} 2: a query that was not aggregated.
TWO_SAMPLES_QUERY = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")'


def args(prometheus, name, query, **overrides):
    return dict(dict(name=name, prometheus_url=prometheus.url, prometheus_username=prometheus.username,
                     prometheus_password=prometheus.password, prometheus_validate_certs=False,
                     query=query, target=1.0, min_replicas=1, max_replicas=6), **overrides)


def inspect(client, service_id):
    return client.api.inspect_service(service_id)


def replicas_of(client, service_id):
    return inspect(client, service_id)['Spec']['Mode']['Replicated']['Replicas']


def history_of(client, service_id):
    """The recorded [[seconds, replicas], ...], or None without the label."""
    text = (inspect(client, service_id)['Spec'].get('Labels') or {}).get(HISTORY_LABEL)
    return None if text is None else json.loads(text)


def test_scale_up_within_the_step_limit(docker_client, busybox_service, prometheus):
    service_id, name = busybox_service(replicas=1, labels={'bxtest.tier': 'web'})
    five = 'vector(5)'  # five times the target: 5 replicas recommended

    result = run_ansible_module(MODULE, args(prometheus, name, five, scale_up_max_step=2,
                                             scale_up_max_percent=0), diff=True)

    assert result['rc'] == 0, result
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
    again = run_ansible_module(MODULE, args(prometheus, name, five, scale_up_max_step=2,
                                            scale_up_max_percent=0, max_replicas=4))
    assert again['rc'] == 0, again
    assert (again['current_replicas'], again['recommendation'], again['applied_replicas']) == (3, 15, 4)
    assert 'diff' not in again
    assert replicas_of(docker_client, service_id) == 4
    assert [entry[1] for entry in history_of(docker_client, service_id)] == [5, 15]


def test_a_dip_inside_the_window_does_not_scale_down(docker_client, busybox_service, prometheus):
    service_id, name = busybox_service(replicas=4)
    window = dict(scale_down_stabilization=300)

    steady = run_ansible_module(MODULE, args(prometheus, name, 'vector(1)', **window))
    assert steady['rc'] == 0, steady
    assert (steady['changed'], steady['applied_replicas']) == (False, 4)
    assert 'within 10% of the target' in steady['reason']

    # A quarter of the load: 1 replica recommended.
    dip = run_ansible_module(MODULE, args(prometheus, name, 'vector(0.25)', **window))
    assert dip['rc'] == 0, dip
    assert dip['changed'] is False
    assert (dip['metric'], dip['recommendation'], dip['desired_replicas'],
            dip['applied_replicas']) == (0.25, 1, 4, 4)
    assert 'so no scale-down yet' in dip['reason'], dip['reason']
    assert replicas_of(docker_client, service_id) == 4
    # The history came back from the label of the first run, not from anything on this host; the
    # dip's recommendation is min_replicas (1), which is never recorded.
    assert [entry[1] for entry in history_of(docker_client, service_id)] == [4]

    recovered = run_ansible_module(MODULE, args(prometheus, name, 'vector(1)', **window))
    assert recovered['rc'] == 0, recovered
    assert (recovered['changed'], recovered['applied_replicas']) == (False, 4)
    assert running_task_count(docker_client, service_id) == 4


def test_a_low_that_outlasts_the_window_scales_down(docker_client, busybox_service, prometheus):
    service_id, name = busybox_service(replicas=3)
    window = dict(scale_down_stabilization=15)

    assert run_ansible_module(MODULE, args(prometheus, name, 'vector(1)', **window))['rc'] == 0
    held = run_ansible_module(MODULE, args(prometheus, name, 'vector(0.3)', **window))
    assert (held['rc'], held['applied_replicas']) == (0, 3), held
    time.sleep(16)  # the recommendation of 3 is now older than the window

    low = run_ansible_module(MODULE, args(prometheus, name, 'vector(0.3)', **window))

    assert low['rc'] == 0, low
    assert low['changed'] is True
    assert (low['recommendation'], low['applied_replicas'], low['running_tasks']) == (1, 1, 1)
    assert replicas_of(docker_client, service_id) == 1
    # This run's recommendation is min_replicas, which is not recorded: the label is left as the
    # first run wrote it, and its entry, older than the window now, no longer counts.
    assert [entry[1] for entry in history_of(docker_client, service_id)] == [3]


def test_check_mode_reports_the_decision_and_changes_nothing(docker_client, busybox_service, prometheus):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']

    result = run_ansible_module(MODULE, args(prometheus, name, 'vector(3)'), check=True, diff=True)

    assert result['rc'] == 0, result
    assert result['changed'] is True
    assert (result['metric'], result['recommendation'], result['applied_replicas']) == (3.0, 3, 3)
    assert result['diff'] == {'before': {name: 1}, 'after': {name: 3}}
    assert result['history'][0][1] == 3
    # Neither the count nor the history label was written.
    assert inspect(docker_client, service_id)['Version']['Index'] == version
    assert replicas_of(docker_client, service_id) == 1
    assert history_of(docker_client, service_id) is None


@pytest.mark.parametrize('query, reason', [
    # The comparison filters the one sample away: Prometheus answers an empty vector.
    ('vector(1) == 2', 'the query returned no sample: no decision, 2 replicas kept'),
    ('vector(NaN)', 'the query returned NaN: no decision, 2 replicas kept'),
    ('vector(+Inf)', 'the query returned +Inf: no decision, 2 replicas kept'),
], ids=['no-sample', 'NaN', 'Inf'])
def test_missing_data_scales_nothing_and_records_nothing(docker_client, busybox_service, prometheus,
                                                         query, reason):
    service_id, name = busybox_service(replicas=2)
    version = inspect(docker_client, service_id)['Version']['Index']

    # min_replicas above the current count: not even the bounds are applied without a metric.
    result = run_ansible_module(MODULE, args(prometheus, name, query, min_replicas=3))

    assert result['rc'] == 0, result
    assert result['changed'] is False
    assert result['reason'] == reason
    assert (result['metric'], result['recommendation'], result['applied_replicas']) == (None, None, 2)
    assert result['history'] == []
    assert inspect(docker_client, service_id)['Version']['Index'] == version
    assert history_of(docker_client, service_id) is None
    assert running_task_count(docker_client, service_id) == 2


def test_nothing_is_written_during_a_rolling_update(docker_client, busybox_service, prometheus):
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

    # The query is one Prometheus refuses: the run succeeds only if it is never sent.
    result = run_ansible_module(MODULE, args(prometheus, name, UNPARSABLE_QUERY))

    assert result['rc'] == 0, result
    assert result['changed'] is False
    assert result['reason'].startswith("the service's update is updating"), result['reason']
    assert result['metric'] is None
    # Swarm itself writes the service's UpdateStatus meanwhile, so the spec is compared, not its version.
    assert replicas_of(docker_client, service_id) == 2
    assert history_of(docker_client, service_id) is None


@pytest.mark.parametrize('overrides, message', [
    ({'target': 0}, 'target must be a number above 0, got 0.0'),
    ({'target': -1}, 'target must be a number above 0'),
    ({'min_replicas': 0}, 'min_replicas must be 1 or more, got 0'),
    ({'min_replicas': 5, 'max_replicas': 2}, 'min_replicas (5) must not be above max_replicas (2)'),
], ids=['target-0', 'target-negative', 'min-0', 'min-above-max'])
def test_bad_settings_fail_before_anything_is_read(docker_client, busybox_service, prometheus,
                                                    overrides, message):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']

    # The query is one Prometheus refuses: had it been sent first, the failure would say so.
    result = run_ansible_module(MODULE, args(prometheus, name, UNPARSABLE_QUERY, **overrides))

    assert result['rc'] != 0 and result.get('failed') is True, result
    assert message in result['msg'] and 'Nothing was changed.' in result['msg'], result['msg']
    assert 'Prometheus' not in result['msg'], result['msg']
    assert inspect(docker_client, service_id)['Version']['Index'] == version


def test_a_query_with_many_samples_fails_and_changes_nothing(docker_client, busybox_service, prometheus):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']

    result = run_ansible_module(MODULE, args(prometheus, name, TWO_SAMPLES_QUERY))

    assert result['rc'] != 0, result
    assert 'the query returned 2 samples' in result['msg'], result['msg']
    assert '{"a": "x"}' in result['msg'] and '{"a": "y"}' in result['msg'], result['msg']
    assert 'Query: %s. Nothing was changed.' % TWO_SAMPLES_QUERY in result['msg'], result['msg']
    assert inspect(docker_client, service_id)['Version']['Index'] == version


def test_a_query_prometheus_refuses_fails_and_changes_nothing(docker_client, busybox_service, prometheus):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']

    result = run_ansible_module(MODULE, args(prometheus, name, UNPARSABLE_QUERY))

    # Prometheus answers HTTP 400 with its parser's error in JSON; the module passes it on.
    assert result['rc'] != 0 and result.get('failed') is True, result
    assert 'Prometheus refused the query (bad_data): ' in result['msg'], result['msg']
    assert 'parse error' in result['msg'], result['msg']
    assert result['msg'].endswith('Query: %s. Nothing was changed.' % UNPARSABLE_QUERY), result['msg']
    assert inspect(docker_client, service_id)['Version']['Index'] == version
    assert history_of(docker_client, service_id) is None


@pytest.mark.parametrize('case, message', [
    # nginx's basic auth refuses (HTTP 401 with its HTML page).
    ('wrong password', 'Prometheus at {url} answered HTTP 401 Unauthorized: check prometheus_url and, behind '
                       'a proxy, prometheus_username and prometheus_password. Nothing was changed.'),
    ('no credentials', 'Prometheus at {url} answered HTTP 401 Unauthorized: check prometheus_url'),
    # Prometheus behind nginx, but a path it does not serve: Go's plain-text 404.
    ('wrong path', 'Prometheus at {url} answered HTTP 404 Not Found: check prometheus_url'),
    # A URL that reaches something else than the API: Prometheus' health check answers 200 in
    # plain text (the rest of the module's URL becomes its query string).
    ('not the API', '{url}/api/v1/query answered something else than JSON: is prometheus_url the base URL '
                    'of Prometheus? Nothing was changed.'),
    # Nothing listens on port 1.
    ('unreachable', 'Cannot reach Prometheus at {url}: '),
], ids=['wrong-password', 'no-credentials', 'wrong-path', 'not-the-api', 'unreachable'])
def test_a_prometheus_that_does_not_answer_fails_and_changes_nothing(docker_client, busybox_service,
                                                                     prometheus, case, message):
    service_id, name = busybox_service(replicas=1)
    version = inspect(docker_client, service_id)['Version']['Index']
    overrides = {
        'wrong password': {'prometheus_password': prometheus.password + '-not'},
        'no credentials': {'prometheus_username': None, 'prometheus_password': None},
        'wrong path': {'prometheus_url': prometheus.url + '/nope'},
        'not the API': {'prometheus_url': prometheus.url + '/-/healthy?'},
        'unreachable': {'prometheus_url': 'http://127.0.0.1:1'},
    }[case]

    result = run_ansible_module(MODULE, args(prometheus, name, 'vector(3)', prometheus_timeout=10, **overrides))

    assert result['rc'] != 0 and result.get('failed') is True, result
    assert message.format(url=overrides.get('prometheus_url', prometheus.url)) in result['msg'], result['msg']
    assert inspect(docker_client, service_id)['Version']['Index'] == version


def query_params(prometheus, query):
    """swarm_service_autoscale's parameters for query_metric, to the real Prometheus."""
    return dict(prometheus_url=prometheus.url + '/', query=query, prometheus_timeout=30,
                prometheus_validate_certs=False, prometheus_ca_path=None,
                prometheus_username=prometheus.username, prometheus_password=prometheus.password)


@pytest.mark.parametrize('query, answer', [
    # Sent URL-encoded as it is, or Prometheus could not parse it: an unencoded '+' would be a
    # space, '&' would end the query parameter, '#' would cut the URL, '%' would be a bad escape.
    ('vector(0.5 + 0.25) * scalar(absent(bxtest_none{q="a&b=c #%/?"}))', (0.75, None)),
    # A scalar instead of an instant vector.
    ('0.75', (0.75, None)),
    ('vector(1) == 2', (None, 'the query returned no sample')),
    ('vector(NaN)', (None, 'the query returned NaN')),
    ('vector(+Inf)', (None, 'the query returned +Inf')),
    ('vector(-Inf)', (None, 'the query returned -Inf')),
], ids=['url-encoding', 'scalar', 'no-sample', 'NaN', 'Inf', 'minus-Inf'])
def test_the_query_is_sent_as_it_is_and_its_value_read(prometheus, query, answer):
    assert autoscale.query_metric(query_params(prometheus, query)) == answer


def test_an_unaggregated_query_is_an_error_not_a_value(prometheus):
    with pytest.raises(AutoscaleError, match=re.escape('the query returned 2 samples')):
        autoscale.query_metric(query_params(prometheus, TWO_SAMPLES_QUERY))


def test_global_service_is_refused(docker_client, busybox_service, prometheus):
    dummy, name = busybox_service(mode={'Global': {}})

    result = run_ansible_module(MODULE, args(prometheus, name, 'vector(2)'))

    assert result['rc'] != 0, result
    assert 'Only replicated services can be autoscaled; refusing %s (global)' % name in result['msg']
