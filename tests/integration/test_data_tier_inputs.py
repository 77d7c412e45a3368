"""Bad input to playbooks/data.yml fails with a clear message before any secret or service exists."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, TEST_PREFIX, vault_env

PREFIX = TEST_PREFIX + 'dtin-'
SECRET_PREFIX = PREFIX.replace('-', '_')
NODES = [PREFIX + 'pg-%d' % i for i in range(3)]
REDIS = [PREFIX + 'redis-%d' % i for i in range(3)]
UNLABELLED = [PREFIX + 'nolabel-pg-%d' % i for i in range(3)]
BASE_VARS = {
    'secrets_docker_prefix': SECRET_PREFIX,
    'postgres_repmgr_nodes': NODES,
    'postgres_repmgr_image': 'boxoffice-test/unused:latest',
    'pgpool_image': 'boxoffice-test/unused:latest',
    'pgpool_service_name': PREFIX + 'pgpool',
    'pgpool_backends': NODES,
    'redis_sentinel_servers': REDIS,
    'redis_sentinel_sentinels': [PREFIX + 'sentinel-%d' % i for i in range(3)],
    'redis_sentinel_image': 'boxoffice-test/unused:latest',
    'redis_proxy_service_name': PREFIX + 'redis-proxy',
    'redis_proxy_servers': REDIS,
    'redis_proxy_image': 'boxoffice-test/unused:latest',
}


def run_data(tmp_path, **overrides):
    extra = dict(BASE_VARS, secrets_dir=str(tmp_path / 'secrets'), secrets_generate=True, **overrides)
    extra = {key: value for key, value in extra.items() if value is not None}
    vars_file = tmp_path / 'vars.json'
    vars_file.write_text(json.dumps(extra))
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
         os.path.join('playbooks', 'data.yml'), '-e', '@%s' % vars_file],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=vault_env(tmp_path))


@pytest.fixture
def nothing_deployed(docker_client):
    """Placement labels for the valid names, so each case fails on its own bad input only."""
    node = docker_client.nodes.get(docker_client.info()['Swarm']['NodeID'])
    spec = node.attrs['Spec']
    added = {'boxoffice.%s' % name: 'true' for name in NODES + REDIS}
    spec['Labels'] = dict(spec.get('Labels') or {}, **added)
    node.update(spec)
    yield
    node.reload()
    spec = node.attrs['Spec']
    spec['Labels'] = {k: v for k, v in (spec.get('Labels') or {}).items() if k not in added}
    node.update(spec)
    assert not [s.name for s in docker_client.services.list() if s.name.startswith(PREFIX)]
    assert not [s.name for s in docker_client.secrets.list() if s.name.startswith(SECRET_PREFIX)]


@pytest.mark.parametrize('overrides, message', [
    ({'postgres_repmgr_nodes': UNLABELLED, 'pgpool_backends': UNLABELLED},
     'No single Swarm node carries the placement label for ' + str(UNLABELLED)),
    ({'postgres_repmgr_initial_primary': 'pg-9'}, 'postgres_repmgr_initial_primary (pg-9) one of them'),
    ({'postgres_repmgr_nodes': ['Bad_Name']}, 'must be distinct DNS-safe names'),
    ({'pgpool_num_init_children': 200}, 'at most 180'),
    ({'postgres_repmgr_synchronous_standbys': 3},
     'postgres_repmgr_synchronous_standbys (3) must be a whole number from 0 to 2'),
    ({'postgres_repmgr_image': None}, 'run the images role first'),
    ({'redis_sentinel_sentinels': ['s-0', 's-1']}, 'the number of sentinels must be odd (got 2'),
    ({'redis_sentinel_quorum': 4}, 'redis_sentinel_quorum (4) between 1 and the number of sentinels'),
    ({'redis_sentinel_servers': [PREFIX + 'nolabel-redis-0']},
     "No single Swarm node carries the placement label for ['%snolabel-redis-0']" % PREFIX),
    ({'redis_sentinel_min_replicas_to_write': 3},
     'redis_sentinel_min_replicas_to_write (3) a whole number from 0 to the number of replicas (2'),
    ({'redis_sentinel_min_replicas_max_lag': 0}, 'redis_sentinel_min_replicas_max_lag (0) whole seconds >= 1'),
    ({'redis_sentinel_sentinel_placement': 'spread'},
     'value of redis_sentinel_sentinel_placement must be one of: beside_server, any, got: spread'),
], ids=['pg-label-on-no-node', 'initial-primary-unknown', 'bad-node-name', 'pool-too-big',
        'more-sync-standbys-than-standbys',
        'no-image-ref', 'even-sentinels', 'quorum-too-big', 'redis-label-on-no-node',
        'min-replicas-too-many', 'max-lag-zero', 'sentinel-placement-unknown'])
def test_bad_input_fails_before_deploying(tmp_path, nothing_deployed, overrides, message):
    result = run_data(tmp_path, **overrides)
    assert result.returncode != 0
    flat = ' '.join((result.stdout + result.stderr).split())
    assert message in flat, result.stdout[-3000:]
    assert not (tmp_path / 'secrets').exists()
