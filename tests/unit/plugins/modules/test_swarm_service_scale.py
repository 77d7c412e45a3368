"""Input validation of swarm_service_scale, which must refuse bad counts before any Docker call."""

import re

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import SwarmError
from ansible_collections.boxoffice.pretix.plugins.modules import swarm_service_scale as scale


def params(**overrides):
    return dict(dict(name=['web'], replicas=2, min_replicas=0, max_replicas=None), **overrides)


@pytest.mark.parametrize('overrides', [
    {}, {'replicas': 0}, {'replicas': 5, 'min_replicas': 5, 'max_replicas': 5},
])
def test_valid_requests_pass(overrides):
    scale.validate_request(params(**overrides))


@pytest.mark.parametrize('overrides, message', [
    ({'replicas': -1}, 'replicas must be 0 or more'),
    ({'replicas': 9, 'max_replicas': 8}, 'outside the allowed range 0..8'),
    ({'min_replicas': -1}, 'min_replicas (-1) must be >= 0'),
    ({'min_replicas': 3, 'max_replicas': 1}, 'must be >= 0 and <= max_replicas (1)'),
    ({'name': []}, 'at least one service'),
])
def test_invalid_requests_are_refused(overrides, message):
    with pytest.raises(SwarmError, match=re.escape(message)):
        scale.validate_request(params(**overrides))
