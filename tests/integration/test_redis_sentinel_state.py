"""A sentinel restarts from the state Sentinel itself saved, even when that state lists a member twice.

Sentinel tracks members by address and saves them by hostname. After a whole-machine crash every
container came back with a new address, and every sentinel had saved the master as its own
replica, twice: `sentinel known-replica boxoffice redis-0 6379` on two lines. Sentinel refuses
such a file ("Duplicate hostname and port for replica"), so all three crash-looped, no Redis
server found a master, and the shop stopped. The image's entrypoint must start from that file.

Real containers of the redis image on a bridge network of their own: one server, one sentinel.
"""

import docker
import pytest

from conftest import TEST_PREFIX, wait_for
from test_data_tier_failover import build_context

PREFIX = TEST_PREFIX + 'sentinel-state-'
SERVER = PREFIX + 'redis-0'
SENTINEL = PREFIX + 'sentinel-0'
PASSWORD = 'sentinel-state-test'

CRASHED_STATE = """port 26379
dir /var/lib/redis-sentinel
sentinel monitor boxoffice {server} 6379 1
sentinel myid fea8e83ca302a17963a6c69dc941677d577ab802
sentinel config-epoch boxoffice 0
sentinel leader-epoch boxoffice 1
sentinel current-epoch 1
sentinel known-sentinel boxoffice {prefix}sentinel-2 26379 20b2e6afad5cd3f3aa3e44f7098a25e4460b63ce
sentinel known-sentinel boxoffice {prefix}sentinel-2 26379 20b2e6afad5cd3f3aa3e44f7098a25e4460b63ce
sentinel known-replica boxoffice {server} 6379
sentinel known-replica boxoffice {server} 6379
sentinel known-replica boxoffice {prefix}redis-1 6379
sentinel known-replica boxoffice {prefix}redis-1 6379
"""


@pytest.fixture
def redis_pair(docker_client, tmp_path):
    client = docker_client
    image = build_context(client, 'redis')
    for name in (SERVER, SENTINEL):
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
    for stale in client.networks.list(names=[PREFIX + 'net']):
        stale.remove()
    network = client.networks.create(PREFIX + 'net', driver='bridge')
    secret = tmp_path / 'redis_password'
    secret.write_text(PASSWORD)
    secret.chmod(0o444)
    state_dir = tmp_path / 'sentinel'
    state_dir.mkdir()
    (state_dir / 'sentinel.conf').write_text(CRASHED_STATE.format(server=SERVER, prefix=PREFIX))
    environment = {'REDIS_INITIAL_MASTER': SERVER, 'REDIS_SENTINELS': SENTINEL, 'REDIS_SERVERS': SERVER,
                   'REDIS_QUORUM': '1', 'REDIS_MIN_REPLICAS_TO_WRITE': '0'}
    secret_mount = {str(secret): {'bind': '/run/secrets/redis_password', 'mode': 'ro'}}
    started = []
    try:
        started.append(client.containers.run(
            image, name=SERVER, detach=True, network=network.name, volumes=secret_mount,
            environment=dict(environment, REDIS_NAME=SERVER, REDIS_MODE='server')))
        started.append(client.containers.run(
            image, name=SENTINEL, detach=True, network=network.name,
            volumes=dict(secret_mount, **{str(state_dir): {'bind': '/var/lib/redis-sentinel', 'mode': 'rw'}}),
            environment=dict(environment, REDIS_NAME=SENTINEL, REDIS_MODE='sentinel')))
        yield started[1], state_dir / 'sentinel.conf'
    finally:
        for container in started:
            container.remove(force=True)
        network.remove()


def sentinel_master(container):
    container.reload()
    if container.status != 'running':
        pytest.fail('the sentinel exited: %s' % container.logs(tail=20).decode(errors='replace'))
    result = container.exec_run(['redis-cli', '-p', '26379', '--no-auth-warning', '-a', PASSWORD,
                                 'SENTINEL', 'get-master-addr-by-name', 'boxoffice'])
    lines = result.output.decode().split()
    return lines[0] if result.exit_code == 0 and lines and 'ERR' not in lines[0] else None


def test_a_sentinel_starts_from_a_state_that_lists_members_twice(redis_pair):
    sentinel, conf = redis_pair
    assert wait_for(lambda: sentinel_master(sentinel), timeout=60, message='the sentinel to answer') == SERVER
    replicas = [line.split()[3] for line in conf.read_text().splitlines() if line.startswith('sentinel known-replica ')]
    assert SERVER not in replicas, 'the master is saved as its own replica'
    assert len(replicas) == len(set(replicas)), 'a replica is saved twice: %s' % replicas
    assert 'sentinel myid fea8e83ca302a17963a6c69dc941677d577ab802' in conf.read_text(), 'the saved identity was lost'
