"""The data tier survives members that are gone, against a real Swarm deployment of playbooks/data.yml.

Deployed with test names (prefix bxtest-px-), apart from the real stack and from other tests.
- pgpool: a backend whose service is scaled to 0 does not resolve (dnsrr publishes running tasks
  only). pgpool lists a standby first, the position whose absence made pgpool 4.3.5's main process
  segfault at every start. Both pgpool tasks are killed (SIGKILL) while that name is gone; they
  must restart without a segfault, serve writes, and re-attach the backend when it returns.
- redis-proxy lists one more server name that never resolves; it must start and route to the master.
- A Redis master cut off from its replicas (its container disconnected from the overlay network)
  must refuse writes (min-replicas-to-write); the sentinels promote a replica meanwhile.
- After a full restart of every Redis server and sentinel, started stale former master first, the
  master the sentinels last knew stays master and keeps its data.

Marked slow: 5.5 minutes on 2 cores with images built (building the pgpool image adds ~4 minutes).
"""

import os
import subprocess
import sys
import time

import pytest

from conftest import TEST_PREFIX, wait_for
from test_data_tier_failover import build_context, exec_out, run_playbook, task_container

pytestmark = pytest.mark.slow

PREFIX = TEST_PREFIX + 'px-'
NETWORK = PREFIX + 'db'
CACHE_NETWORK = PREFIX + 'cache'
PG_NODES = [PREFIX + 'pg-%d' % i for i in range(3)]
PGPOOL = PREFIX + 'pgpool'
REDIS = [PREFIX + 'redis-%d' % i for i in range(3)]
SENTINELS = [PREFIX + 'sentinel-%d' % i for i in range(3)]
PROXY = PREFIX + 'redis-proxy'
ABSENT_REDIS = PREFIX + 'redis-absent'
SECRET_PREFIX = PREFIX.replace('-', '_')
REPMGR_CONF = '/etc/boxoffice/repmgr.conf'
MAX_LAG = 5


@pytest.fixture(scope='module')
def tier(docker_client, tmp_path_factory):
    client = docker_client
    tmp_path = tmp_path_factory.mktemp('tier')
    images = {name: build_context(client, name) for name in ('postgres', 'pgpool', 'redis', 'haproxy')}
    node_id = client.info()['Swarm']['NodeID']
    node = client.nodes.get(node_id)
    spec = node.attrs['Spec']
    added = {'boxoffice.%s' % name: 'true' for name in PG_NODES + REDIS}
    spec['Labels'] = dict(spec.get('Labels') or {}, **added)
    node.update(spec)
    networks = [client.networks.create(name, driver='overlay', attachable=True)
                for name in (NETWORK, CACHE_NETWORK)]
    extra_vars = {
        'secrets_dir': str(tmp_path / 'secrets'),
        'secrets_generate': True,
        'secrets_docker_prefix': SECRET_PREFIX,
        'postgres_repmgr_nodes': PG_NODES,
        'postgres_repmgr_network': NETWORK,
        'postgres_repmgr_volume_prefix': SECRET_PREFIX + 'pgdata_',
        'postgres_repmgr_image': images['postgres'],
        # Test members never archive into the stack's backup repository.
        'postgres_repmgr_backup_stanza': '',
        'pgpool_service_name': PGPOOL,
        # A standby first: pgpool 4.3.5 segfaulted when its first backend was unreachable.
        'pgpool_backends': [PG_NODES[2], PG_NODES[0], PG_NODES[1]],
        'pgpool_network': NETWORK,
        'pgpool_image': images['pgpool'],
        'redis_sentinel_servers': REDIS,
        'redis_sentinel_sentinels': SENTINELS,
        'redis_sentinel_network': CACHE_NETWORK,
        'redis_sentinel_volume_prefix': SECRET_PREFIX + 'redisdata_',
        'redis_sentinel_min_replicas_max_lag': MAX_LAG,
        'redis_sentinel_image': images['redis'],
        'redis_proxy_service_name': PROXY,
        'redis_proxy_servers': REDIS + [ABSENT_REDIS],
        'redis_proxy_network': CACHE_NETWORK,
        'redis_proxy_image': images['haproxy'],
    }
    try:
        run_playbook(extra_vars, tmp_path)
        yield {'client': client, 'vars': extra_vars, 'tmp': tmp_path, 'images': images,
               'node_id': node_id}
    finally:
        teardown(client, node_id, added, networks)


def teardown(client, node_id, added, networks):
    for service in client.services.list():
        if service.name.startswith(PREFIX):
            service.remove()
    for container in client.api.containers(all=True, filters={'name': PREFIX}):
        if 'com.docker.swarm.service.name' not in container['Labels']:
            client.api.remove_container(container['Id'], force=True)
    wait_for(lambda: not [c for c in client.api.containers(all=True)
                          if c['Labels'].get('com.docker.swarm.service.name', '').startswith(PREFIX)],
             timeout=120, message='test task containers to go away')
    for volume in client.volumes.list():
        if volume.name.startswith(SECRET_PREFIX):
            volume.remove(force=True)
    for kind in (client.secrets, client.configs):
        for item in kind.list():
            if item.name.startswith(SECRET_PREFIX) or item.name.startswith(PREFIX):
                item.remove()
    for network in networks:
        network.remove()
    node = client.nodes.get(node_id)
    spec = node.attrs['Spec']
    spec['Labels'] = {k: v for k, v in (spec.get('Labels') or {}).items() if k not in added}
    node.update(spec)


def secret(tier, name):
    tmp = tier['tmp']
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-vault'), 'view',
         '--vault-password-file', str(tmp / 'vault-password'), str(tmp / 'secrets' / ('%s.vault' % name))],
        capture_output=True, text=True, check=True).stdout.strip()


def client_run(tier, image, network, command, files):
    """Run `command` (bash) in a throw-away container on `network`; returns (exit code, output)."""
    volumes = {}
    for target, content in files.items():
        path = tier['tmp'] / target.strip('/')
        path.write_text(content)
        path.chmod(0o600)
        volumes[str(path)] = {'bind': target, 'mode': 'ro'}
    container = tier['client'].containers.run(
        image=image, network=network, user='root', volumes=volumes, entrypoint=['bash', '-c', command],
        environment={'PGPASSFILE': '/pgpass'}, detach=True)
    try:
        code = container.wait(timeout=60)['StatusCode']
        return code, container.logs().decode(errors='replace')
    finally:
        container.remove(force=True)


def through_pgpool(tier, sql):
    return client_run(tier, tier['images']['postgres'], NETWORK,
                      'psql "host=%s user=pretix dbname=pretix connect_timeout=10" -XAtqc "%s"' % (PGPOOL, sql),
                      {'/pgpass': '*:*:*:pretix:%s\n' % secret(tier, 'pg_pretix_password')})


def through_proxy(tier, commands):
    return client_run(tier, tier['images']['redis'], CACHE_NETWORK,
                      'REDISCLI_AUTH=$(cat /pw) redis-cli -h %s --no-auth-warning <<"EOF"\n%s\nEOF' % (PROXY, commands),
                      {'/pw': secret(tier, 'redis_password')})


def cluster_rows(client):
    """(name, role, running) rows of `repmgr cluster show`, asked on the first node that answers."""
    for via in PG_NODES:
        container = task_container(client, via)
        if container is None:
            continue
        code, plain = exec_out(container, ['repmgr', '-f', REPMGR_CONF, 'cluster', 'show'])
        rows = []
        for line in plain.splitlines():
            cells = [c.strip() for c in line.split('|')]
            if len(cells) >= 4 and cells[0].isdigit():
                rows.append((cells[1], cells[2], cells[3] in ('* running', 'running')))
        if rows:
            return rows
    return []


def healthy_cluster(client):
    rows = cluster_rows(client)
    if len(rows) == len(PG_NODES) and all(r[2] for r in rows) and [r[1] for r in rows].count('primary') == 1:
        return rows
    return None


def pool_nodes(tier):
    """{backend: status} from SHOW pool_nodes through pgpool, or {} when pgpool does not answer."""
    code, out = through_pgpool(tier, 'SHOW pool_nodes')
    if code != 0:
        return {}
    return {row[1]: row[3] for row in (line.split('|') for line in out.splitlines()) if len(row) > 3}


def resolves(client, name, network_container):
    code, _ = exec_out(network_container, ['getent', 'hosts', name], user='root')
    return code == 0


def pgpool_tasks(client):
    return client.api.tasks(filters={'service': PGPOOL})


def test_redis_proxy_starts_with_a_server_name_that_does_not_resolve(tier):
    client = tier['client']
    proxies = wait_for(lambda: client.containers.list(
        filters={'label': 'com.docker.swarm.service.name=%s' % PROXY, 'status': 'running'}),
        timeout=60, message='redis-proxy tasks running')
    assert not resolves(client, ABSENT_REDIS, proxies[0])
    code, out = wait_for(lambda: (lambda r: r if r[1].split()[:2] == ['OK', '1'] else None)(
        through_proxy(tier, 'SET proxy:probe 1\nWAIT 1 2000')), timeout=120,
        message='a write through redis-proxy acknowledged by a replica')
    failed = [t for t in client.api.tasks(filters={'service': PROXY}) if t['Status']['State'] != 'running']
    assert failed == [], failed


def test_pgpool_survives_a_backend_that_does_not_resolve(tier):
    client = tier['client']
    rows = wait_for(lambda: healthy_cluster(client), timeout=300, message='a healthy PostgreSQL cluster')
    absent = PG_NODES[2]
    assert dict((r[0], r[1]) for r in rows)[absent] == 'standby', rows
    code, out = through_pgpool(tier, 'CREATE TABLE IF NOT EXISTS px (id int PRIMARY KEY)')
    assert code == 0, out

    client.services.get(absent).scale(0)
    pgpool_container = task_container(client, PGPOOL)
    wait_for(lambda: not resolves(client, absent, pgpool_container), timeout=120,
             message='%s to stop resolving' % absent)
    killed_at = time.time()
    killed = client.containers.list(filters={'label': 'com.docker.swarm.service.name=%s' % PGPOOL,
                                             'status': 'running'})
    assert len(killed) == 2
    for container in killed:
        container.kill(signal='KILL')

    # pgpool restarts, finds the primary with the first backend gone, and takes writes.
    wait_for(lambda: through_pgpool(tier, 'INSERT INTO px VALUES (1) ON CONFLICT DO NOTHING')[0] == 0,
             timeout=120, message='writes through the restarted pgpool')
    # Past the health check's detach of the missing backend, every task still runs.
    time.sleep(15)
    for i in range(2, 6):
        code, out = through_pgpool(tier, 'INSERT INTO px VALUES (%d)' % i)
        assert code == 0, out
    killed_ids = set(c.id for c in killed)
    after = [t for t in pgpool_tasks(client)
             if t['Status'].get('ContainerStatus', {}).get('ContainerID') not in killed_ids]
    exits = [t['Status'].get('ContainerStatus', {}).get('ExitCode') for t in after
             if t['Status']['State'] != 'running']
    assert exits == [], 'pgpool tasks ended after the kill with exit codes %s' % exits
    assert sum(1 for t in after if t['Status']['State'] == 'running') == 2
    assert wait_for(lambda: (lambda n: n if n.get(absent) == 'down' else None)(pool_nodes(tier)),
                    timeout=60, message='pgpool to detach %s' % absent)
    assert time.time() - killed_at < 300

    # The backend returns: repmgr rejoins it, pgpool re-attaches it by itself (auto_failback).
    client.services.get(absent).scale(1)
    wait_for(lambda: healthy_cluster(client), timeout=300, message='%s back as a standby' % absent)

    def attached_everywhere():
        # Asked several times to reach both dnsrr replicas.
        return all(pool_nodes(tier).get(absent) == 'up' for _ in range(4))
    wait_for(attached_everywhere, timeout=180, message='pgpool to re-attach %s' % absent)
    code, out = through_pgpool(tier, 'SELECT count(*) FROM px')
    assert code == 0 and out.strip() == '5', out


def redis_cli(container, *args):
    code, out = exec_out(container, ['sh', '-c', 'REDISCLI_AUTH=$(cat /run/secrets/redis_password) '
                                     'redis-cli --no-auth-warning "$@"', 'redis-cli'] + list(args), user='root')
    return out.strip()


def redis_layout(client):
    """(masters, replicas with an up link to the single master)."""
    info = {}
    for server in REDIS:
        container = task_container(client, server)
        if container is None:
            continue
        fields = dict(line.strip().split(':', 1) for line in redis_cli(container, 'INFO', 'replication').splitlines()
                      if ':' in line)
        info[server] = fields
    masters = [s for s, f in info.items() if f.get('role') == 'master']
    replicas = [s for s, f in info.items() if f.get('role') == 'slave' and f.get('master_link_status') == 'up'
                and masters and f.get('master_host') == masters[0]]
    return masters, replicas


def settled(client):
    masters, replicas = redis_layout(client)
    return masters[0] if len(masters) == 1 and len(replicas) == len(REDIS) - 1 else None


def test_isolated_redis_master_refuses_writes(tier):
    client = tier['client']
    master = wait_for(lambda: settled(client), timeout=240, message='one Redis master with in-sync replicas')
    container = task_container(client, master)
    assert redis_cli(container, 'SET', 'isolation:before', '1') == 'OK'
    network = client.networks.get(CACHE_NETWORK)
    network.disconnect(container, force=True)
    cut_at = time.time()
    refused = wait_for(lambda: (lambda r: r if 'NOREPLICAS' in r else None)(
        redis_cli(container, 'SET', 'isolation:after', '1')), timeout=MAX_LAG + 30,
        message='the isolated master to refuse writes')
    refused_after = time.time() - cut_at
    print('\nREDIS isolated master refused writes %.1f s after the cut (max lag %d s): %s'
          % (refused_after, MAX_LAG, refused))
    # The sentinels promote a replica; the old master, restarted, comes back as its replica.
    container.kill(signal='KILL')
    new_master = wait_for(lambda: (lambda m: m if m and m != master else None)(settled(client)),
                          timeout=240, message='a new master, the old one back as a replica')
    tier['redis_master'] = new_master
    tier['redis_stale'] = master
    code, out = through_proxy(tier, 'SET isolation:new 1\nWAIT 1 2000')
    assert out.split()[:2] == ['OK', '1'], out


def test_full_restart_keeps_the_master_the_sentinels_know(tier):
    client = tier['client']
    master, stale = tier.get('redis_master'), tier.get('redis_stale')
    if not master:
        pytest.skip('needs the isolation test before it')
    container = task_container(client, master)
    assert redis_cli(container, 'SET', 'restart:key', 'kept') == 'OK'
    assert redis_cli(container, 'WAIT', '2', '2000') == '2'
    for name in REDIS + SENTINELS:
        client.services.get(name).scale(0)
    wait_for(lambda: all(task_container(client, name) is None for name in REDIS + SENTINELS),
             timeout=120, message='every Redis server and sentinel stopped')
    # The stale former master (and first-deployment master) alone first: no sentinel to ask.
    client.services.get(stale).scale(1)
    time.sleep(10)
    stale_container = task_container(client, stale)
    if stale_container is not None:
        assert redis_cli(stale_container, 'ROLE').split()[:1] != ['master'], \
            '%s became master with no sentinel running' % stale
    for name in SENTINELS + [s for s in REDIS if s != stale]:
        client.services.get(name).scale(1)
    final = wait_for(lambda: settled(client), timeout=240, message='one master with in-sync replicas')
    assert final == master, 'the master after a full restart is %s, the sentinels knew %s' % (final, master)
    code, out = through_proxy(tier, 'GET restart:key')
    assert out.strip() == 'kept', out
