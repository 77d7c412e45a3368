"""How swarm_service_autoscale and the in-swarm autoscaler read their metric
(module_utils/autoscale_run.py): real HTTP to a Prometheus API on loopback
(the prometheus_stub fixture), so every failure is one an operator can act on and none scales."""

import re
import socket

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale import AutoscaleError
from ansible_collections.boxoffice.pretix.plugins.module_utils import autoscale_run as autoscale

QUERY = 'avg(rate(container_cpu_usage_seconds_total{service="pretix-web"}[1m]))'


def params(url, **overrides):
    return dict(dict(prometheus_url=url, query=QUERY, prometheus_timeout=5, prometheus_validate_certs=True,
                     prometheus_ca_path=None, prometheus_username=None, prometheus_password=None), **overrides)


def test_the_query_is_sent_as_it_is_and_its_value_read(prometheus_stub):
    prometheus_stub.value = 0.75
    assert autoscale.query_metric(params(prometheus_stub.url + '/')) == (0.75, None)
    assert prometheus_stub.queries == [QUERY]
    assert prometheus_stub.auth == [None]


def test_basic_auth_is_sent_when_a_user_is_given(prometheus_stub):
    prometheus_stub.value = 1
    autoscale.query_metric(params(prometheus_stub.url, prometheus_username='autoscaler',
                                  prometheus_password='secret'))
    assert prometheus_stub.auth == ['Basic YXV0b3NjYWxlcjpzZWNyZXQ=']


@pytest.mark.parametrize('value, why', [(None, 'the query returned no sample'), ('NaN', 'the query returned NaN')])
def test_missing_data_is_no_value_not_an_error(prometheus_stub, value, why):
    prometheus_stub.value = value
    assert autoscale.query_metric(params(prometheus_stub.url)) == (None, why)


@pytest.mark.parametrize('status, body, message', [
    (400, '{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected <EOF>"}',
     'Prometheus refused the query (bad_data): 1:5: parse error: unexpected <EOF>. Query: %s. '
     'Nothing was changed.' % QUERY),
    (401, '<html>401 Authorization Required</html>',
     'answered HTTP 401 Unauthorized: check prometheus_url and, behind a proxy, prometheus_username'),
    (200, '<html>Grafana</html>', '/api/v1/query answered something else than JSON: is prometheus_url'),
])
def test_refused_queries_fail_with_what_to_check(prometheus_stub, status, body, message):
    prometheus_stub.status, prometheus_stub.body = status, body
    with pytest.raises(AutoscaleError, match=re.escape(message)):
        autoscale.query_metric(params(prometheus_stub.url))


def test_an_unreachable_prometheus_fails_with_what_to_check():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        url = 'http://127.0.0.1:%d' % probe.getsockname()[1]
    with pytest.raises(AutoscaleError, match=re.escape('Cannot reach Prometheus at %s: ' % url)):
        autoscale.query_metric(params(url))
