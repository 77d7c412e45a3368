"""Failover drills for the data tier against the real Swarm deployment of playbooks/data.yml.

The playbook is run with test names (prefix bxtest-dt-) so the drill never touches a real stack
on the shared daemon. A client container on the test network writes a row every 100 ms through
pgpool; the primary's container is SIGKILLed (a crash: nothing is flushed or shipped on the way
out) and Swarm restarts it. Asserted: a standby is promoted, writes resume, no acknowledged
write is lost, the old primary rejoins on its own as a standby streaming from the new primary
on the new timeline, and exactly one primary exists. Measured and printed (never asserted): the
time from the kill to the first successful write, also appended to reports/failover.jsonl.

The Redis drill has the same shape through redis-proxy (HAProxy): the master is SIGKILLed;
acknowledged = SET answered OK and WAIT 1 1000 confirmed by a replica; recovery = first
acknowledged write on a new master; the old master comes back as a replica on its own.

Marked slow: about 7 minutes on 2 cores with images built (first image builds add ~4 minutes).
Images are built on conftest.debian_base_image (the images role's debootstrapped base).
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import docker
import pytest

from conftest import REPO_ROOT, TEST_PREFIX, debian_base_image, image_context, vault_env, wait_for

pytestmark = pytest.mark.slow

PREFIX = TEST_PREFIX + 'dt-'
NETWORK = PREFIX + 'db'
PG_NODES = [PREFIX + 'pg-%d' % i for i in range(3)]
PGPOOL = PREFIX + 'pgpool'
CACHE_NETWORK = PREFIX + 'cache'
REDIS = [PREFIX + 'redis-%d' % i for i in range(3)]
SENTINELS = [PREFIX + 'sentinel-%d' % i for i in range(3)]
PROXY = PREFIX + 'redis-proxy'
SECRET_PREFIX = PREFIX.replace('-', '_')
REPMGR_CONF = '/etc/boxoffice/repmgr.conf'
REPORT = os.path.join(REPO_ROOT, 'reports', 'failover.jsonl')


def build_context(client, name):
    """Build the image's context (roles/<role>/files/image) tagged by a hash of it (unchanged = cached)."""
    context = image_context(name)
    base_image = debian_base_image(client)
    digest = hashlib.sha256(base_image.encode())
    for root, _, files in sorted(os.walk(context)):
        for filename in sorted(files):
            path = os.path.join(root, filename)
            digest.update(os.path.relpath(path, context).encode())
            with open(path, 'rb') as handle:
                digest.update(handle.read())
    tag = 'boxoffice-test/%s:%s' % (name, digest.hexdigest()[:12])
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.images.build(path=context, tag=tag, buildargs={'BASE_IMAGE': base_image}, rm=True)
    return tag


def run_playbook(extra_vars, tmp_path, check=True):
    vars_file = tmp_path / 'vars.json'
    vars_file.write_text(json.dumps(extra_vars))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
         os.path.join('playbooks', 'data.yml'), '-e', '@%s' % vars_file],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
        env=vault_env(tmp_path))
    if check:
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc


def recap_changed(output):
    line = [l for l in output.splitlines() if 'changed=' in l][-1]
    return int(line.split('changed=')[1].split()[0])


def task_container(client, service):
    """The running container of a one-replica service on this node, or None."""
    found = client.containers.list(filters={'label': 'com.docker.swarm.service.name=%s' % service,
                                            'status': 'running'})
    return found[0] if found else None


def exec_out(container, cmd, user='postgres'):
    """(exit code, output) of cmd in the container; (None, the error) when the container stopped
    after it was looked up, as a member does when pg-node starts it over."""
    try:
        code, output = container.exec_run(cmd, user=user)
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
        return None, str(exc)
    return code, output.decode(errors='replace')


def cluster_rows(client, via):
    """Rows of `repmgr cluster show` run on node `via`: (name, role, running)."""
    container = task_container(client, via)
    if container is None:
        return []
    _, plain = exec_out(container, ['repmgr', '-f', REPMGR_CONF, 'cluster', 'show'])
    rows = []
    for line in plain.splitlines():
        cells = [c.strip() for c in line.split('|')]
        if len(cells) >= 4 and cells[0].isdigit():
            rows.append((cells[1], cells[2], cells[3] in ('* running', 'running')))
    return rows


def is_in_recovery(client, node):
    container = task_container(client, node)
    if container is None:
        return None
    code, output = exec_out(container, ['psql', '-XAtqc', 'SELECT pg_is_in_recovery()'])
    return output.strip() if code == 0 else None


@pytest.fixture(scope='module')
def data_tier(docker_client, tmp_path_factory):
    client = docker_client
    tmp_path = tmp_path_factory.mktemp('data_tier')
    images = {name: build_context(client, name) for name in ('postgres', 'pgpool', 'redis', 'haproxy')}
    node_id = client.info()['Swarm']['NodeID']
    node = client.nodes.get(node_id)
    spec = node.attrs['Spec']
    labels = dict(spec.get('Labels') or {})
    added = {'boxoffice.%s' % name: 'true' for name in PG_NODES + REDIS}
    spec['Labels'] = dict(labels, **added)
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
        'pgpool_backends': PG_NODES,
        'pgpool_network': NETWORK,
        'pgpool_image': images['pgpool'],
        'redis_sentinel_servers': REDIS,
        'redis_sentinel_sentinels': SENTINELS,
        'redis_sentinel_network': CACHE_NETWORK,
        'redis_sentinel_volume_prefix': SECRET_PREFIX + 'redisdata_',
        'redis_sentinel_image': images['redis'],
        'redis_proxy_service_name': PROXY,
        'redis_proxy_servers': REDIS,
        'redis_proxy_network': CACHE_NETWORK,
        'redis_proxy_image': images['haproxy'],
    }
    try:
        first = run_playbook(extra_vars, tmp_path)
        yield {'client': client, 'vars': extra_vars, 'tmp': tmp_path, 'images': images,
               'first_run': first}
    finally:
        teardown(client, node_id, added, networks)


def teardown(client, node_id, added, networks):
    services = [s for s in client.services.list() if s.name.startswith(PREFIX)]
    for service in services:
        service.remove()
    for container in client.api.containers(all=True, filters={'name': PREFIX}):
        if 'com.docker.swarm.service.name' not in container['Labels']:
            client.api.remove_container(container['Id'], force=True)
    # The low-level list does not inspect each container, so it cannot race their removal.
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


def read_secret(data_tier, name):
    tmp = data_tier['tmp']
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-vault'), 'view',
         '--vault-password-file', str(tmp / 'vault-password'), str(tmp / 'secrets' / ('%s.vault' % name))],
        capture_output=True, text=True, check=True).stdout.strip()


def standbys_stream_from(client, primary):
    """True when every other node streams from `primary` on the primary's current timeline."""
    container = task_container(client, primary)
    if container is None:
        return False
    code, out = exec_out(container, ['psql', '-XAtqc', "SELECT ('x' || substr(pg_walfile_name("
                                     "pg_current_wal_lsn()), 1, 8))::bit(32)::int"])
    if code != 0:
        return False
    timeline = out.strip()
    for node in PG_NODES:
        if node == primary:
            continue
        standby = task_container(client, node)
        if standby is None:
            return False
        code, out = exec_out(standby, ['psql', '-XAtqc', 'SELECT status, received_tli, sender_host '
                                       'FROM pg_stat_wal_receiver'])
        if code != 0 or out.strip() != 'streaming|%s|%s' % (timeline, primary):
            return False
    return True


def wait_cluster_healthy(client, expect_nodes):
    def healthy():
        for via in PG_NODES:
            rows = cluster_rows(client, via)
            if len(rows) == len(expect_nodes) and all(r[2] for r in rows) and \
                    sum(1 for r in rows if r[1] == 'primary') == 1:
                return rows
        return None
    return wait_for(healthy, timeout=300, message='all PostgreSQL nodes running with one primary')


# Prints "ok <n> <time> <server address>" for each acknowledged (committed) insert, else "fail".
WRITER = r'''
i=0
while :; do
  i=$((i+1))
  if server=$(psql "host=%s user=pretix dbname=pretix connect_timeout=1" -XAtq \
       -c "INSERT INTO drill(id) VALUES ($i) RETURNING host(inet_server_addr())" 2>/dev/null); then
    echo "ok $i $(date +%%s.%%N) $server"
  else
    echo "fail $i $(date +%%s.%%N) -"
  fi
  sleep 0.1
done
'''


def start_writer(data_tier):
    client = data_tier['client']
    pgpass = data_tier['tmp'] / 'pgpass'
    pgpass.write_text('*:*:*:pretix:%s\n' % read_secret(data_tier, 'pg_pretix_password'))
    pgpass.chmod(0o600)
    common = dict(image=data_tier['images']['postgres'], network=NETWORK, user='root',
                  environment={'PGPASSFILE': '/pgpass'},
                  volumes={str(pgpass): {'bind': '/pgpass', 'mode': 'ro'}})
    setup = client.containers.run(
        entrypoint=['psql', 'host=%s user=pretix dbname=pretix' % PGPOOL, '-Xqc',
                    'CREATE TABLE IF NOT EXISTS drill (id int PRIMARY KEY, at timestamptz DEFAULT now())'],
        name=PREFIX + 'setup', remove=True, stderr=True, **common)
    assert setup is not None
    return client.containers.run(entrypoint=['bash', '-c', WRITER % PGPOOL], name=PREFIX + 'writer',
                                 detach=True, **common)


def writer_lines(writer):
    lines = []
    for line in writer.logs(stdout=True, stderr=False).decode().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in ('ok', 'fail'):
            lines.append((parts[0], int(parts[1]), float(parts[2]), parts[3]))
    return lines


def pgpool_query(data_tier, sql):
    out = data_tier['client'].containers.run(
        image=data_tier['images']['postgres'], network=NETWORK, user='root',
        environment={'PGPASSFILE': '/pgpass'},
        volumes={str(data_tier['tmp'] / 'pgpass'): {'bind': '/pgpass', 'mode': 'ro'}},
        entrypoint=['psql', 'host=%s user=pretix dbname=pretix' % PGPOOL, '-XAtqc', sql],
        name=PREFIX + 'query', remove=True)
    return out.decode()


def count_rows(data_tier):
    return set(int(x) for x in pgpool_query(data_tier, 'SELECT id FROM drill ORDER BY id').split())


def pgpool_node_up(data_tier, node):
    """True when pgpool lists `node` as up; asked several times to reach both dnsrr replicas.
    pgpool may close a connection while it attaches a node back: not up yet."""
    for _ in range(4):
        try:
            answer = pgpool_query(data_tier, 'SHOW pool_nodes')
        except docker.errors.ContainerError:
            return False
        rows = [line.split('|') for line in answer.splitlines()]
        if not any(row[1] == node and row[3] == 'up' for row in rows if len(row) > 3):
            return False
    return True


def report(record):
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, 'a') as handle:
        handle.write(json.dumps(record) + '\n')
    print('\nFAILOVER %s' % json.dumps(record))


def test_second_run_changes_nothing(data_tier):
    proc = run_playbook(data_tier['vars'], data_tier['tmp'])
    assert recap_changed(proc.stdout) == 0, proc.stdout[-4000:]


def test_pretix_user_owns_its_database_and_is_no_superuser(data_tier):
    client = data_tier['client']
    wait_cluster_healthy(client, PG_NODES)
    primary = task_container(client, PG_NODES[0])
    code, out = exec_out(primary, ['psql', '-XAtqc',
                                   "SELECT r.rolsuper, pg_get_userbyid(d.datdba) FROM pg_roles r, pg_database d "
                                   "WHERE r.rolname = 'pretix' AND d.datname = 'pretix'"])
    assert code == 0 and out.strip() == 'f|pretix', out
    code, out = exec_out(primary, ['psql', '-XAtqc', 'SHOW password_encryption'])
    assert out.strip() == 'scram-sha-256'


def test_postgres_failover_through_pgpool(data_tier):
    client = data_tier['client']
    rows = wait_cluster_healthy(client, PG_NODES)
    primary = [r[0] for r in rows if r[1] == 'primary'][0]
    assert is_in_recovery(client, primary) == 'f'
    writer = start_writer(data_tier)
    try:
        wait_for(lambda: sum(1 for line in writer_lines(writer) if line[0] == 'ok') >= 20,
                 timeout=120, message='the writer to get 20 writes through pgpool')
        old_server = [l for l in writer_lines(writer) if l[0] == 'ok'][-1][3]
        stopped_at = time.time()
        task_container(client, primary).kill(signal='SIGKILL')

        # Recovered = a write acknowledged by another server than the stopped primary.
        def recovered():
            return next((l for l in writer_lines(writer)
                         if l[0] == 'ok' and l[2] > stopped_at and l[3] != old_server), None)
        first_ok = wait_for(recovered, timeout=180, message='writes to resume through pgpool')
        survivors = [n for n in PG_NODES if n != primary]
        rows = wait_for(lambda: [r for r in cluster_rows(client, survivors[0])
                                 if r[1] == 'primary' and r[2]], timeout=60,
                        message='a promoted primary in repmgr cluster show')
        assert len(rows) == 1 and rows[0][0] in survivors, rows
        new_primary = rows[0][0]

        wait_for(lambda: standbys_stream_from(client, new_primary), timeout=300,
                 message='both standbys streaming from %s on its timeline' % new_primary)
        final = wait_cluster_healthy(client, PG_NODES)
        rejoined = time.time()
        assert [r[0] for r in final if r[1] == 'primary'] == [new_primary], final
        assert dict((r[0], r[1]) for r in final)[primary] == 'standby', final
        assert is_in_recovery(client, primary) == 't'
        # pgpool re-attaches the rejoined node by itself (auto_failback), no pcp_attach_node.
        wait_for(lambda: pgpool_node_up(data_tier, primary), timeout=120,
                 message='pgpool to re-attach the rejoined %s' % primary)
        time.sleep(2)
    finally:
        writer.stop(timeout=2)
        lines = writer_lines(writer)
        writer.remove(force=True)
    acknowledged = set(line[1] for line in lines if line[0] == 'ok')
    present = count_rows(data_tier)
    missing = sorted(acknowledged - present)
    failed = [l for l in lines if l[0] == 'fail']
    last_old = max(l[2] for l in lines if l[0] == 'ok' and l[3] == old_server)
    report({'drill': 'postgres', 'stop_to_first_write_s': round(first_ok[2] - stopped_at, 2),
            'stop_to_last_write_on_old_primary_s': round(last_old - stopped_at, 2),
            'old_primary': primary, 'new_primary': new_primary,
            'kill_to_full_redundancy_s': round(rejoined - stopped_at, 1),
            'acknowledged': len(acknowledged), 'failed_attempts': len(failed),
            'acknowledged_missing': len(missing)})
    assert missing == [], 'acknowledged writes lost: %s' % missing[:20]


def test_a_standby_streaming_from_another_standby_returns_to_the_primary(data_tier):
    """The state a failover can leave: a standby still points at the former primary, which
    rejoined as a standby, so it streams from it (cascading) and looks healthy. The primary
    cannot count it towards the synchronous quorum; pg-node must move it back."""
    client = data_tier['client']
    rows = wait_cluster_healthy(client, PG_NODES)
    primary = [r[0] for r in rows if r[1] == 'primary'][0]
    wait_for(lambda: standbys_stream_from(client, primary), timeout=120,
             message='both standbys streaming from %s' % primary)
    cascading, upstream = [n for n in PG_NODES if n != primary]
    code, out = exec_out(task_container(client, cascading), [
        'psql', '-XAtq', '-c', "ALTER SYSTEM SET primary_conninfo = 'host=%s port=5432 user=repmgr "
        "application_name=%s connect_timeout=2'" % (upstream, cascading), '-c', 'SELECT pg_reload_conf()'])
    assert code == 0, out

    def sender():
        container = task_container(client, cascading)
        if container is None:
            return None
        code, out = exec_out(container, ['psql', '-XAtqc', "SELECT sender_host FROM pg_stat_wal_receiver "
                                         "WHERE status = 'streaming'"])
        return out.strip() if code == 0 else None
    wait_for(lambda: sender() == upstream, timeout=60,
             message='%s to stream from the standby %s' % (cascading, upstream))
    cascaded_at = time.time()
    wait_for(lambda: standbys_stream_from(client, primary), timeout=240,
             message=lambda: '%s to stream from the primary %s again (it streams from %s)' % (
                 cascading, primary, sender()))
    report({'drill': 'postgres cascading standby', 'standby': cascading, 'cascaded_from': upstream,
            'primary': primary, 'back_on_the_primary_s': round(time.time() - cascaded_at, 1)})
    wait_cluster_healthy(client, PG_NODES)


# Prints "ok <n> <time> <server>" when SET was acknowledged by the master and by at least one
# replica (WAIT 1 1000), "fail ..." otherwise. <server> is the answering server's announced name.
REDIS_WRITER = r'''
export REDISCLI_AUTH=$(cat /pw)
i=0
while :; do
  i=$((i+1))
  out=$(printf 'SET drill:%%d %%d\nWAIT 1 1000\nCONFIG GET replica-announce-ip\n' $i $i \
        | timeout 3 redis-cli -h %s 2>/dev/null | tr '\n' ' ')
  set -- $out
  if [ "${1:-}" = OK ] && [ "${2:-0}" -ge 1 ] 2>/dev/null; then
    echo "ok $i $(date +%%s.%%N) ${4:--}"
  else
    echo "fail $i $(date +%%s.%%N) -"
  fi
  sleep 0.1
done
'''


def redis_role(client, server):
    container = task_container(client, server)
    if container is None:
        return None
    code, out = exec_out(container, ['sh', '-c', 'REDISCLI_AUTH=$(cat /run/secrets/redis_password) '
                                     'redis-cli --no-auth-warning INFO replication'], user='root')
    fields = dict(l.strip().split(':', 1) for l in out.splitlines() if ':' in l)
    return fields.get('role'), fields.get('master_link_status'), fields.get('master_host')


def redis_layout(client):
    roles = {server: redis_role(client, server) for server in REDIS}
    masters = [s for s, r in roles.items() if r and r[0] == 'master']
    replicas_up = [s for s, r in roles.items() if r and r[0] == 'slave' and r[1] == 'up'
                   and r[2] in masters]
    return masters, replicas_up


def test_redis_failover_through_proxy(data_tier):
    client = data_tier['client']

    def settled():
        masters, replicas = redis_layout(client)
        return masters if len(masters) == 1 and len(replicas) == len(REDIS) - 1 else None
    masters = wait_for(settled, timeout=240, message='one Redis master with in-sync replicas')
    old_master = masters[0]
    pw = data_tier['tmp'] / 'redis_pw'
    pw.write_text(read_secret(data_tier, 'redis_password'))
    writer = client.containers.run(
        image=data_tier['images']['redis'], network=CACHE_NETWORK, user='root',
        volumes={str(pw): {'bind': '/pw', 'mode': 'ro'}},
        entrypoint=['bash', '-c', REDIS_WRITER % PROXY], name=PREFIX + 'redis-writer', detach=True)
    try:
        wait_for(lambda: sum(1 for l in writer_lines(writer) if l[0] == 'ok') >= 20,
                 timeout=120, message='20 acknowledged writes through redis-proxy')
        stopped_at = time.time()
        task_container(client, old_master).kill(signal='SIGKILL')
        first_ok = wait_for(lambda: next((l for l in writer_lines(writer) if l[0] == 'ok'
                                          and l[2] > stopped_at and l[3] != old_master), None),
                            timeout=180, message='acknowledged writes on a new master')
        new_master = first_ok[3]

        def old_master_is_replica():
            masters, replicas = redis_layout(client)
            return masters == [new_master] and sorted(replicas) == sorted(set(REDIS) - {new_master})
        wait_for(old_master_is_replica, timeout=180,
                 message='the old master back as a replica of %s' % new_master)
        rejoined = time.time()
        assert redis_role(client, old_master)[0] == 'slave'
        time.sleep(2)
    finally:
        writer.stop(timeout=2)
        lines = writer_lines(writer)
        writer.remove(force=True)
    acknowledged = set(l[1] for l in lines if l[0] == 'ok')
    out = client.containers.run(
        image=data_tier['images']['redis'], network=CACHE_NETWORK, user='root',
        volumes={str(pw): {'bind': '/pw', 'mode': 'ro'}}, name=PREFIX + 'redis-count', remove=True,
        entrypoint=['bash', '-c', 'REDISCLI_AUTH=$(cat /pw) redis-cli -h %s --scan --pattern "drill:*"' % PROXY])
    present = set(int(k.split(':')[1]) for k in out.decode().split())
    missing = sorted(acknowledged - present)
    report({'drill': 'redis', 'stop_to_recovery_s': round(first_ok[2] - stopped_at, 2),
            'old_master': old_master, 'new_master': new_master,
            'kill_to_full_redundancy_s': round(rejoined - stopped_at, 1),
            'acknowledged': len(acknowledged),
            'failed_attempts': sum(1 for l in lines if l[0] == 'fail'),
            'acknowledged_missing': len(missing)})
    assert missing == [], 'acknowledged writes lost: %s' % missing[:20]
