"""How swarm_service_autoscale and the in-swarm autoscaler (module_utils/autoscale_run.py) read
their metric when no Prometheus answers: real HTTP to a closed port on loopback, so the failure
is one an operator can act on and nothing scales.

What a real Prometheus answers (values, missing data, refused queries, basic auth, proxies'
errors) is tested against the stack's own in tests/integration/test_modules_autoscale.py.
"""

import re
import socket

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale import AutoscaleError
from ansible_collections.boxoffice.pretix.plugins.module_utils import autoscale_run as autoscale

QUERY = 'avg(rate(container_cpu_usage_seconds_total{service="pretix-web"}[1m]))'


def params(url, **overrides):
    return dict(dict(prometheus_url=url, query=QUERY, prometheus_timeout=5, prometheus_validate_certs=True,
                     prometheus_ca_path=None, prometheus_username=None, prometheus_password=None), **overrides)


def test_an_unreachable_prometheus_fails_with_what_to_check():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        url = 'http://127.0.0.1:%d' % probe.getsockname()[1]
    with pytest.raises(AutoscaleError, match=re.escape('Cannot reach Prometheus at %s: ' % url)):
        autoscale.query_metric(params(url))
