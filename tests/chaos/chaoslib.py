"""The chaos harness: buyers that keep ordering, faults, the full-redundancy check, the report.

Used by test_chaos.py; nothing here is a test. Everything runs against a real deployed stack:

- A *target* is where the stack runs. `local_target()` is the stack site.yml deployed on this
  machine (one engine, reached through the Docker SDK). `cluster_target()` is the 3-node
  docker-in-docker test cluster (playbooks/test_cluster.yml): Swarm requests go to the manager's
  engine inside boxoffice-node1, container requests to the engine of the node that runs the task
  (`docker exec boxoffice-nodeN docker ...` through the outer engine, since the node engines listen
  only on their own socket); whole-node faults act on the outer engine (kill, network disconnect).
- `Buyers` runs API buyers (POST .../orders/ with the bootstrap API token, as the loadtest role's
  ApiBuyer does) and web buyers (the browser checkout of tests/e2e/test_buy_ticket.py, reusing its
  form helpers) in threads and records every attempt: confirmed (HTTP 201 with an order code, or
  the order page reached) or failed.
- `redundancy_problems(target)` lists what keeps the stack from full redundancy (empty = full):
  every PostgreSQL member answering, exactly one primary, two streaming standbys on the primary's
  timeline, one Redis master with two linked replicas, sentinels agreeing, every Swarm service at
  its desired running replicas.
- `run_case()` checks full redundancy, starts the buyers, injects one fault, waits for full
  redundancy to return, stops the buyers, looks every confirmed order up in PostgreSQL (and the
  REST API for any not found there), and returns the case's record (see README.md).

`python tests/chaos/chaoslib.py [reports/chaos.jsonl]` prints the table of recorded cases.
"""

import collections
import contextlib
import datetime
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid

import docker
import requests
import urllib3
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
# The browser checkout's helpers live with the e2e test that proves them; reuse, never copy.
sys.path.insert(0, os.path.join(REPO_ROOT, 'tests', 'e2e'))
import test_buy_ticket as e2e  # noqa: E402  pylint: disable=wrong-import-position

REPORT = os.path.join(REPO_ROOT, 'reports', 'chaos.jsonl')
TEST_PREFIX = 'bxtest-'
PG_NODES = ('pg-0', 'pg-1', 'pg-2')
REDIS_SERVERS = ('redis-0', 'redis-1', 'redis-2')
SENTINELS = ('sentinel-0', 'sentinel-1', 'sentinel-2')
REDIS_MASTER_NAME = 'boxoffice'
PG_VOLUME_PREFIX = 'boxoffice_pgdata_'

# One query answered by every member, primary or standby. The primary's timeline is the one it
# writes WAL on now (the first 8 hex digits of its current WAL file): pg_control_checkpoint()
# keeps the previous timeline until the first checkpoint after a promotion, which PostgreSQL
# spreads over checkpoint_completion_target * checkpoint_timeout (minutes), so both are reported.
PG_STATE_SQL = """
SELECT pg_is_in_recovery(),
       (SELECT timeline_id FROM pg_control_checkpoint()),
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'),
       (SELECT coalesce(string_agg(application_name, ',' ORDER BY application_name), '')
          FROM pg_stat_replication WHERE state = 'streaming'),
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT received_tli FROM pg_stat_wal_receiver),
       (SELECT sender_host FROM pg_stat_wal_receiver)
"""
REDIS_CLI = 'REDISCLI_AUTH=$(cat /run/secrets/redis_password) redis-cli --no-auth-warning '


def now():
    return time.time()


def utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec='seconds')


# --------------------------------------------------------------------------------------------
# Engines: where Swarm and container requests go.


class LocalEngine:
    """One engine that is the Swarm manager and runs every task (the local stack)."""

    name = 'local'

    def __init__(self, client=None):
        self.client = client or docker.from_env(timeout=60)

    def services(self):
        return self.client.api.services()

    def tasks(self, service):
        return self.client.api.tasks(filters={'service': service})

    def nodes(self):
        return self.client.api.nodes()

    def exec(self, task, cmd, user='root'):
        """Run cmd in the task's container; (exit code, output), or (None, error) when it cannot."""
        try:
            exec_id = self.client.api.exec_create(container_id(task), cmd, user=user)['Id']
            output = self.client.api.exec_start(exec_id)
            code = self.client.api.exec_inspect(exec_id)['ExitCode']
            return code, output.decode(errors='replace')
        except docker.errors.APIError as exc:
            return None, str(exc)

    def kill(self, task):
        self.client.api.kill(container_id(task), signal='KILL')

    def scale(self, service, replicas):
        self.client.services.get(service).scale(replicas)

    def remove_volume(self, task_node_id, volume):
        del task_node_id  # one engine
        self.client.api.remove_volume(volume, force=True)

    def service_log(self, service, since):
        """The service's log lines since the Unix time `since`, read from its task containers,
        oldest first: the engine's service log stream can stay open for ever once a task's
        container was killed."""
        containers = self.client.containers.list(
            all=True, filters={'label': 'com.docker.swarm.service.name=' + service})
        lines = []
        for container in sorted(containers, key=lambda c: c.attrs['Created']):
            lines += container.logs(stdout=True, stderr=True, since=int(since)).decode(errors='replace').splitlines()
        return lines

    def partition_task(self, task, network):
        """Cut the task's container off an overlay network (a partition of that member)."""
        self.client.api.disconnect_container_from_network(container_id(task), network)

    def heal_task_partition(self, task, network):
        self.client.api.connect_container_to_network(container_id(task), network)


class ClusterEngine:
    """The docker-in-docker test cluster: node containers <cluster>-node1..N on the outer engine.

    Swarm requests run `docker` inside a manager node container, container requests inside the
    node that runs the task (the node's hostname is nodeN, its container <cluster>-nodeN). Swarm
    requests go to the manager that answered last, else to the next one: a manager whose node is
    down or cut off, or that lost the Raft quorum, does not answer. Every command in a node is
    bounded by `command_timeout` (a manager without quorum can hold a request).
    """

    name = 'cluster'
    command_timeout = 20
    # What a manager that cannot serve a Swarm request answers (any other failure is the answer).
    MANAGER_LOST = re.compile(r'not a swarm manager|does not have a leader|context deadline exceeded|'
                              r'Cannot connect to the Docker daemon|code = (Unavailable|DeadlineExceeded)')

    def __init__(self, outer=None, cluster='boxoffice', managers=('node1', 'node2', 'node3')):
        self.outer = outer or docker.from_env(timeout=60)
        self.cluster = cluster
        self.network = '%s-testnet' % cluster
        self.managers = managers
        self._manager = managers[0]
        self._hostnames = {}
        self._cut_addresses = {}

    @property
    def manager(self):
        """The manager that answers Swarm requests now."""
        self.swarm('node', 'ls', '-q')
        return self._manager

    def node_container(self, hostname):
        return '%s-%s' % (self.cluster, hostname)

    def docker(self, hostname, *args):
        """(exit code, output) of `docker ARGS` in the node; APIError when its container is down."""
        return self.run(hostname, 'docker', *args)

    def run(self, hostname, *argv):
        """(exit code, output) of a command in the node; APIError when its container is down."""
        exec_id = self.outer.api.exec_create(
            self.node_container(hostname), ['timeout', str(self.command_timeout)] + list(argv))['Id']
        # Separate streams: a warning on stderr must not land inside JSON read from stdout.
        out, err = self.outer.api.exec_start(exec_id, demux=True)
        out = (out or b'').decode(errors='replace') + (err or b'').decode(errors='replace')
        return self.outer.api.exec_inspect(exec_id)['ExitCode'], out

    def swarm_json(self, *args, attempts=3):
        """The JSON that `docker ARGS` prints on a manager, [] when none answers. Output that is
        not JSON (a manager cut off mid-answer) is asked for again."""
        for _ in range(attempts):
            code, out = self.swarm(*args)
            if code != 0:
                return []
            try:
                return json.loads(out)
            except ValueError:
                continue
        return []

    def swarm(self, *args):
        """`docker ARGS` on a manager that can answer it: the last one that did, then the others."""
        answer = (None, 'no manager among %s answers' % (self.managers,))
        for hostname in sorted(self.managers, key=lambda h: h != self._manager):
            try:
                code, out = self.docker(hostname, *args)
            except docker.errors.APIError as exc:  # the node's container is not running
                answer = (None, str(exc))
                continue
            if code == 0 or (code != 124 and not self.MANAGER_LOST.search(out)):
                self._manager = hostname
                return code, out
            answer = (code, out)
        return answer

    def _inspect(self, kind, ids):
        if not ids:
            return []
        return self.swarm_json(kind, 'inspect', *ids)

    def services(self):
        code, out = self.swarm('service', 'ls', '-q')
        return self._inspect('service', out.split()) if code == 0 else []

    def tasks(self, service):
        code, out = self.swarm('service', 'ps', '-q', '--no-trunc', service)
        ids = out.split() if code == 0 else []
        if not ids:
            return []
        return self.swarm_json('inspect', '--type', 'task', *ids)

    def nodes(self):
        code, out = self.swarm('node', 'ls', '-q')
        nodes = self._inspect('node', out.split()) if code == 0 else []
        self._hostnames.update({n['ID']: n['Description']['Hostname'] for n in nodes})
        return nodes

    def hostname(self, node_id):
        if node_id not in self._hostnames:
            self.nodes()
        return self._hostnames[node_id]

    def exec(self, task, cmd, user='root'):
        try:
            return self.docker(self.hostname(task['NodeID']), 'exec', '-u', user, container_id(task), *cmd)
        except (docker.errors.APIError, KeyError) as exc:
            return None, str(exc)

    def kill(self, task):
        code, out = self.docker(self.hostname(task['NodeID']), 'kill', '-s', 'KILL', container_id(task))
        if code != 0:
            raise RuntimeError('docker kill failed: %s' % out)

    def scale(self, service, replicas):
        self.swarm('service', 'scale', '--detach', '%s=%d' % (service, replicas))

    def remove_volume(self, task_node_id, volume):
        self.docker(self.hostname(task_node_id), 'volume', 'rm', '-f', volume)

    def service_log(self, service, since):
        """The service's log lines since the Unix time `since` (tasks on nodes that answer)."""
        code, out = self.swarm('service', 'logs', '--no-trunc', '--since', str(int(since)), service)
        return out.splitlines() if code == 0 else []

    def address(self, hostname):
        """The node's address on the test network, or None while it is not attached."""
        try:
            networks = self.outer.api.inspect_container(self.node_container(hostname))['NetworkSettings']['Networks']
        except docker.errors.APIError:
            return None
        return (networks.get(self.network) or {}).get('IPAddress') or None

    def edge_addresses(self, service='nginx'):
        """Addresses of the nodes whose running task of `service` publishes the shop's ports."""
        addresses = []
        for task in self.tasks(service):
            if task['DesiredState'] == 'running' and task['Status']['State'] == 'running':
                try:
                    address = self.address(self.hostname(task['NodeID']))
                except KeyError:
                    continue
                if address:
                    addresses.append(address)
        return addresses

    def holders(self, address):
        """The nodes whose interfaces carry `address` now (keepalived's floating address)."""
        found = []
        for hostname in self.managers:
            try:
                code, out = self.run(hostname, 'ip', '-o', '-4', 'addr', 'show', 'to', address + '/32')
            except docker.errors.APIError:
                continue
            if code == 0 and out.strip():
                found.append(hostname)
        return found

    # Whole-node faults act on the outer engine.
    def kill_node(self, hostname):
        self.outer.api.kill(self.node_container(hostname), signal='KILL')

    def start_node(self, hostname):
        self.outer.api.start(self.node_container(hostname))

    # A pulled cable leaves the machine its address: the node is reconnected with the one it had
    # (Swarm knows each node by its advertised address; a new one would make it a stranger).
    def partition_node(self, hostname, network=None):
        network = network or self.network
        container = self.node_container(hostname)
        settings = self.outer.api.inspect_container(container)['NetworkSettings']['Networks'][network]
        self._cut_addresses[hostname] = settings['IPAddress']
        self.outer.api.disconnect_container_from_network(container, network)

    def heal_partition(self, hostname, network=None):
        self.outer.api.connect_container_to_network(
            self.node_container(hostname), network or self.network, ipv4_address=self._cut_addresses.pop(hostname))


class EdgeRouter:
    """Where the shop's host name points now: the address of a node that runs nginx as Swarm
    reports it, asked again at most every `refresh` seconds. It stands for what fronts a real
    cluster (DNS failover, a load balancer's health checks, a floating address): buyers reach
    nginx on its new node once Swarm runs it there."""

    def __init__(self, engine, refresh=2.0):
        self.engine = engine
        self.refresh = refresh
        self._address = None
        self._asked = 0.0
        self._lock = threading.Lock()

    def __call__(self):
        if now() - self._asked >= self.refresh and self._lock.acquire(blocking=self._address is None):
            try:
                if now() - self._asked >= self.refresh:
                    addresses = self.engine.edge_addresses()
                    if addresses and self._address not in addresses:
                        self._address = addresses[0]
                    self._asked = now()
            finally:
                self._lock.release()
        if self._address is None:
            raise requests.ConnectionError('no node runs nginx')
        return self._address


class EdgeAdapter(requests.adapters.HTTPAdapter):
    """Sends every request to the address `edge()` gives, with the URL's host name as Host header,
    TLS server name and the name the certificate must carry: sessions keep the shop's own URLs
    and cookies, and nothing reaches whatever that name means on this machine."""

    def __init__(self, edge, **kwargs):
        self.edge = edge
        super().__init__(**kwargs)

    def send(self, request, **kwargs):  # pylint: disable=arguments-differ
        url = urllib3.util.parse_url(request.url)
        routed = request.copy()
        routed.url = url._replace(host=self.edge()).url
        routed.headers['Host'] = url.host if url.port is None else '%s:%d' % (url.host, url.port)
        routed.edge_host = url.host
        response = super().send(routed, **kwargs)
        response.url, response.request = request.url, request
        return response

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        edge_host = getattr(request, 'edge_host', None)
        if edge_host and host_params['scheme'] == 'https':
            pool_kwargs['server_hostname'] = edge_host
            pool_kwargs['assert_hostname'] = edge_host
        return host_params, pool_kwargs


def container_id(task):
    return task['Status']['ContainerStatus']['ContainerID']


class Target:
    """A deployed stack to break: its engine, the shop's URL and TLS CA, the demo event."""

    def __init__(self, engine, base_url, ca=None, organizer='demo', event='concert', edge=None,
                 floating_address=None):
        self.engine = engine
        self.edge = edge
        self.floating_address = floating_address
        self.name = engine.name
        self.base_url = base_url.rstrip('/')
        self.ca = ca if ca and os.path.exists(ca) else False
        self.organizer = organizer
        self.event = event

    @property
    def api(self):
        return '%s/api/v1/organizers/%s/events/%s/' % (self.base_url, self.organizer, self.event)

    def session(self, token=None):
        """A requests session for the shop: no proxy, the stack's CA (or none: see e2e)."""
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the stack's own certificate
        s.verify = self.ca
        if not self.ca:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        s.headers['User-Agent'] = 'boxoffice-chaos'
        if self.edge:  # the shop's name is not this machine's: route to the cluster's edge
            adapter = EdgeAdapter(self.edge)
            s.mount('https://', adapter)
            s.mount('http://', adapter)
        if token:
            s.headers['Authorization'] = 'Token ' + token
        return s

    # Tasks and members. Inside `with target.snapshot():` every service's tasks are read once.
    _tasks = None

    def tasks(self, service):
        if self._tasks is not None:
            if service not in self._tasks:
                self._tasks[service] = self.engine.tasks(service)
            return self._tasks[service]
        return self.engine.tasks(service)

    @contextlib.contextmanager
    def snapshot(self):
        self._tasks = {}
        try:
            yield
        finally:
            self._tasks = None

    def running_tasks(self, service):
        return [t for t in self.tasks(service)
                if t['DesiredState'] == 'running' and t['Status']['State'] == 'running'
                and t['Status'].get('ContainerStatus', {}).get('ContainerID')]

    def task(self, service):
        tasks = self.running_tasks(service)
        return tasks[0] if tasks else None


def local_target(client=None):
    base_url = os.environ.get('BOXOFFICE_CHAOS_URL', e2e.BASE_URL)
    return Target(LocalEngine(client), base_url, ca=e2e.TLS_CA,
                  organizer=e2e.EVENT_PATH.split('/')[0], event=e2e.EVENT_PATH.split('/')[1])


def cluster_floating_address():
    """The test cluster's floating address (keepalived_address of its inventory), or None."""
    path = os.path.join(REPO_ROOT, 'inventories', 'testcluster', 'group_vars', 'all', 'stack.yml')
    with open(path, encoding='utf-8') as handle:
        return (yaml.safe_load(handle) or {}).get('keepalived_address') or None


def cluster_target():
    """The test cluster. BOXOFFICE_CHAOS_URL is its pretix_url (default https://localhost); every
    request goes to the cluster's floating address (keepalived), or without one to the node that
    runs nginx (EdgeRouter), never to that name on this machine. BOXOFFICE_CHAOS_CA is its
    certificate (~/.config/boxoffice/tls/testcluster)."""
    base_url = os.environ.get('BOXOFFICE_CHAOS_URL', 'https://localhost')
    ca = os.path.expanduser(os.environ.get('BOXOFFICE_CHAOS_CA', '~/.config/boxoffice/tls/testcluster/cert.pem'))
    engine = ClusterEngine(cluster=os.environ.get('BOXOFFICE_CHAOS_CLUSTER_NAME', 'boxoffice'))
    address = cluster_floating_address()
    return Target(engine, base_url, ca=ca, organizer=e2e.EVENT_PATH.split('/')[0],
                  event=e2e.EVENT_PATH.split('/')[1], edge=(lambda: address) if address else EdgeRouter(engine),
                  floating_address=address)


# --------------------------------------------------------------------------------------------
# The data tier as it is now.


def pg_state(target, member):
    """The member's replication state as a dict, or None when it has no running container or
    does not answer."""
    task = target.task(member)
    if task is None:
        return None
    code, out = target.engine.exec(task, ['psql', '-XAtq', '-F', '|', '-c', PG_STATE_SQL], user='postgres')
    if code != 0:
        return None
    cells = out.strip().split('|')
    if len(cells) != 8:
        return None
    recovery, ckpt_tli, wal_tli, streaming, names, rx_status, rx_tli, sender = cells
    return {'task': task, 'primary': recovery == 'f', 'checkpoint_tli': int(ckpt_tli or 0),
            'wal_tli': int(wal_tli) if wal_tli else None, 'streaming_standbys': int(streaming or 0),
            'standby_names': [n for n in names.split(',') if n], 'receiver': rx_status or None,
            'received_tli': int(rx_tli) if rx_tli else None, 'sender': sender or None}


def pg_states(target):
    return {member: pg_state(target, member) for member in PG_NODES}


def pg_primaries(target, states=None):
    states = states or pg_states(target)
    return [m for m, s in states.items() if s and s['primary']]


def redis_info(target, server):
    task = target.task(server)
    if task is None:
        return None
    code, out = target.engine.exec(task, ['sh', '-c', REDIS_CLI + 'INFO replication'])
    if code != 0:
        return None
    fields = dict(line.strip().split(':', 1) for line in out.splitlines() if ':' in line)
    return dict(fields, task=task)


def redis_master(target):
    masters = [s for s in REDIS_SERVERS if (redis_info(target, s) or {}).get('role') == 'master']
    return masters[0] if len(masters) == 1 else None


def sentinel_master(target, sentinel):
    task = target.task(sentinel)
    if task is None:
        return None
    code, out = target.engine.exec(task, ['sh', '-c', REDIS_CLI + '-p 26379 SENTINEL get-master-addr-by-name '
                                          + REDIS_MASTER_NAME])
    return out.split()[0] if code == 0 and out.strip() and 'ERR' not in out else None


def swarm_problems(target):
    """Nodes not ready (or managers not reachable), and services (not other tests' bxtest-*) below
    their desired running replicas."""
    nodes = target.engine.nodes()
    if not nodes:
        return ['no Swarm manager answers']
    ready = set(n['ID'] for n in nodes if n['Status']['State'] == 'ready')
    problems = ['node %s %s' % (n['Description']['Hostname'], n['Status']['State'])
                for n in nodes if n['ID'] not in ready]
    problems.extend('manager %s %s' % (n['Description']['Hostname'], n['ManagerStatus'].get('Reachability'))
                    for n in nodes if n['ID'] in ready and n.get('ManagerStatus')
                    and n['ManagerStatus'].get('Reachability') != 'reachable')
    for service in target.engine.services():
        name = service['Spec']['Name']
        if name.startswith(TEST_PREFIX):
            continue
        tasks = [t for t in target.tasks(name) if t['DesiredState'] == 'running']
        running = [t for t in tasks if t['Status']['State'] == 'running' and t.get('NodeID') in ready]
        mode = service['Spec']['Mode']
        want = mode['Replicated']['Replicas'] if 'Replicated' in mode else len(tasks)
        if len(running) < want:
            problems.append('%s %d/%d running' % (name, len(running), want))
    return problems


def redundancy_problems(target):
    """Everything that keeps the stack from full redundancy now; [] when it is fully redundant."""
    with target.snapshot():
        return _redundancy_problems(target)


def _redundancy_problems(target):
    problems = []
    states = pg_states(target)
    down = [m for m, s in states.items() if s is None]
    if down:
        problems.append('postgres not answering: %s' % ','.join(down))
    primaries = pg_primaries(target, states)
    if len(primaries) != 1:
        problems.append('postgres primaries: %s' % (','.join(primaries) or 'none'))
    else:
        primary = states[primaries[0]]
        tli = primary['wal_tli']
        if primary['streaming_standbys'] != len(PG_NODES) - 1:
            problems.append('%s has %d streaming standbys (%s)' % (
                primaries[0], primary['streaming_standbys'], ','.join(primary['standby_names'])))
        for member, state in states.items():
            if state is None or member == primaries[0]:
                continue
            if state['receiver'] != 'streaming' or state['received_tli'] != tli:
                problems.append('%s receiver %s on timeline %s (primary %s on %s)' % (
                    member, state['receiver'], state['received_tli'], primaries[0], tli))
    infos = {s: redis_info(target, s) for s in REDIS_SERVERS}
    masters = [s for s, i in infos.items() if i and i.get('role') == 'master']
    if len(masters) != 1:
        problems.append('redis masters: %s' % (','.join(masters) or 'none'))
    else:
        linked = [s for s, i in infos.items() if i and i.get('role') == 'slave'
                  and i.get('master_link_status') == 'up' and i.get('master_host') == masters[0]]
        if len(linked) != len(REDIS_SERVERS) - 1:
            problems.append('redis replicas linked to %s: %s' % (masters[0], ','.join(linked) or 'none'))
    views = {s: sentinel_master(target, s) for s in SENTINELS}
    if set(views.values()) != set(masters[:1]) or len(masters) != 1:
        problems.append('sentinels do not all name the master %s: %s' % (','.join(masters), views))
    if target.floating_address:
        holders = target.engine.holders(target.floating_address)
        if len(holders) != 1:
            problems.append('floating address %s held by: %s' % (target.floating_address, ','.join(holders) or 'none'))
    problems.extend(swarm_problems(target))
    return problems


def wait_full_redundancy(target, timeout, poll=1.0):
    """(seconds until full redundancy or None on timeout, the last problems seen)."""
    start = now()
    problems = ['not checked']
    while now() - start < timeout:
        problems = redundancy_problems(target)
        if not problems:
            return now() - start, []
        time.sleep(poll)
    return None, problems


# --------------------------------------------------------------------------------------------
# Buyers.


class Attempt(collections.namedtuple('Attempt', 'kind started ended code error')):
    @property
    def ok(self):
        return self.code is not None


class Buyers:
    """API and web buyers ordering in threads until stop(); every attempt is recorded."""

    def __init__(self, target, token, item, api_buyers=3, web_buyers=1, api_pacing=1.0):
        self.target = target
        self.token = token
        self.item = item
        self.api_buyers = api_buyers
        self.web_buyers = web_buyers
        self.api_pacing = api_pacing
        self.attempts = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def start(self):
        for i in range(self.api_buyers):
            self._threads.append(threading.Thread(target=self._loop, args=(self._api_order, self.api_pacing),
                                                  name='api-buyer-%d' % i, daemon=True))
        for i in range(self.web_buyers):
            self._threads.append(threading.Thread(target=self._loop, args=(self._web_order, 0.5),
                                                  name='web-buyer-%d' % i, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout=150):
        """Let every buyer finish the attempt it is in (a web checkout waits up to 2 minutes)."""
        self._stop.set()
        deadline = now() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - now()))
        return [t.name for t in self._threads if t.is_alive()]

    def confirmed(self, since=0.0):
        with self._lock:
            return [a for a in self.attempts if a.ok and a.ended >= since]

    def snapshot(self):
        with self._lock:
            return list(self.attempts)

    def _loop(self, order, pacing):
        session = self.target.session()
        while not self._stop.is_set():
            started = now()
            try:
                code, error = order(session), None
            except Exception as exc:  # pylint: disable=broad-except  # every failure is counted
                code, error = None, short_error(exc)
            with self._lock:
                self.attempts.append(Attempt(order.__name__.strip('_').split('_')[0], started, now(), code, error))
            self._stop.wait(max(0.0, pacing - (now() - started)) if code else max(0.5, pacing))
        session.close()

    def _api_order(self, session):
        order = {'email': 'chaos-%s@example.org' % uuid.uuid4().hex[:12], 'locale': 'en',
                 'sales_channel': 'web', 'payment_provider': 'manual', 'positions': [{'item': self.item}]}
        response = session.post(self.target.api + 'orders/', json=order, timeout=30,
                                headers={'Authorization': 'Token ' + self.token})
        if response.status_code != 201:
            title = re.search(r'<title>([^<]*)</title>', response.text)
            raise RuntimeError('HTTP %d %s' % (response.status_code,
                                               title.group(1) if title else response.text[:80]))
        return response.json()['code']

    def _web_order(self, session):
        """test_buy_ticket's checkout with its helpers, for the chaos product."""
        session.cookies.clear()  # every checkout is a new buyer with an empty cart
        event_url = '%s/%s/%s/' % (self.target.base_url, self.target.organizer, self.target.event)
        page = session.get(event_url, timeout=30)
        page.raise_for_status()
        field = 'item_%d' % self.item
        cart = e2e.find_form(e2e.parse_forms(page.text), lambda f: field in e2e.field_names(f), 'add-to-cart')
        data = e2e.form_data(cart, lambda name, kind: None)
        data[field] = '1'
        response = e2e.post_form(session, page.url, cart, data)
        response.raise_for_status()
        response = session.get(event_url + 'checkout/start', timeout=30)
        if '/checkout/questions/' not in response.url:
            raise RuntimeError('checkout start went to %s' % response.url)
        email = 'chaos-web-%s@example.org' % uuid.uuid4().hex[:12]

        def fill(name, kind):
            del kind
            if 'email' in name:
                return email
            if 'name_parts_0' in name or name.endswith('given_name'):
                return 'Erika'
            if 'name' in name:
                return 'Mustermann'
            return None
        questions = e2e.find_form(e2e.parse_forms(response.text), lambda f: f['method'] == 'post'
                                  and any('email' in n for n in e2e.field_names(f)), 'questions')
        response = e2e.post_form(session, response.url, questions, e2e.form_data(questions, fill))
        if '/checkout/payment/' not in response.url:
            raise RuntimeError('questions not accepted: %s' % response.url)
        payment = e2e.find_form(e2e.parse_forms(response.text), lambda f: 'payment' in f['radios'], 'payment')
        data = e2e.form_data(payment, lambda name, kind: None)
        data['payment'] = 'manual'
        response = e2e.post_form(session, response.url, payment, data)
        if '/checkout/confirm/' not in response.url:
            raise RuntimeError('payment not accepted: %s' % response.url)
        confirm = e2e.find_form(e2e.parse_forms(response.text), lambda f: f['method'] == 'post'
                                and 'cart/' not in f['action']
                                and 'csrfmiddlewaretoken' in e2e.field_names(f), 'confirm')
        response = e2e.post_form(session, response.url, confirm, e2e.form_data(confirm, lambda n, k: None))
        match = re.search(r'/order/([A-Z0-9]+)/([a-z0-9]+)/', response.url)
        if not match or response.status_code != 200:
            raise RuntimeError('no order page after confirming: %s %s' % (response.status_code, response.url))
        return match.group(1)


def short_error(exc):
    text = ' '.join(('%s: %s' % (type(exc).__name__, exc)).split())
    text = re.sub(r'0x[0-9a-f]+', '', text)
    text = re.sub(r'async_id=[^ ]+', 'async_id=...', text)
    # urllib3's wrapper names the URL first; the cause is what tells failures apart.
    cause = text.find('(Caused by ')
    if cause >= 0:
        text = '%s: %s' % (type(exc).__name__, text[cause + len('(Caused by '):])
    return text[:160]


# --------------------------------------------------------------------------------------------
# The shop's chaos product, and looking orders up afterwards.


def create_chaos_item(target, token):
    """A product of the demo event with an unlimited quota, so the suite never sells the demo
    product's quota out from under other tests; returns its id (deactivate it when done)."""
    s = target.session(token)
    try:
        label = 'Chaos %s' % datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S')
        item = s.post(target.api + 'items/', json={'name': {'en': label}, 'default_price': '1.00',
                                                   'admission': True, 'active': True}, timeout=60)
        if item.status_code != 201:
            raise RuntimeError('creating the chaos product: HTTP %d %s' % (item.status_code, item.text[:300]))
        item_id = item.json()['id']
        quota = s.post(target.api + 'quotas/', json={'name': label, 'size': None, 'items': [item_id],
                                                     'variations': [], 'subevent': None}, timeout=60)
        if quota.status_code != 201:
            raise RuntimeError('creating the chaos quota: HTTP %d %s' % (quota.status_code, quota.text[:300]))
        return item_id
    finally:
        s.close()


def deactivate_item(target, token, item_id):
    s = target.session(token)
    try:
        s.patch(target.api + 'items/%d/' % item_id, json={'active': False}, timeout=60)
    finally:
        s.close()


def missing_orders(target, token, codes):
    """The confirmed codes PostgreSQL (the current primary) does not have and the REST API does
    not find either; (missing codes, how many PostgreSQL had)."""
    codes = sorted(set(codes))
    if not codes:
        return [], 0
    primaries = pg_primaries(target)
    found = set()
    if len(primaries) == 1:
        sql = ("SELECT o.code FROM pretixbase_order o JOIN pretixbase_event e ON e.id = o.event_id "
               "JOIN pretixbase_organizer g ON g.id = e.organizer_id WHERE g.slug = '%s' AND e.slug = '%s' "
               "AND o.code = ANY('{%s}')" % (target.organizer, target.event, ','.join(codes)))
        code, out = target.engine.exec(target.task(primaries[0]),
                                       ['psql', '-XAtq', '-d', 'pretix', '-c', sql], user='postgres')
        if code == 0:
            found = set(out.split())
    in_pg = len(found)
    s = target.session(token)
    try:
        for order_code in codes:
            if order_code in found:
                continue
            for _ in range(3):
                try:
                    r = s.get(target.api + 'orders/%s/' % order_code, timeout=30)
                except requests.RequestException:
                    time.sleep(2)
                    continue
                if r.status_code == 200:
                    found.add(order_code)
                if r.status_code in (200, 404):
                    break
                time.sleep(2)
    finally:
        s.close()
    return [c for c in codes if c not in found], in_pg


# --------------------------------------------------------------------------------------------
# Faults. Each kills now and returns what it killed (a dict for the report).


def kill_task(target, service, task=None):
    task = task or target.task(service)
    if task is None:
        raise RuntimeError('%s has no running task to kill' % service)
    target.engine.kill(task)
    return {'service': service, 'container': container_id(task)[:12], 'node': task.get('NodeID', '')[:12],
            'at': now()}


def kill_service(service, pick=None):
    """A fault that SIGKILLs one running task of `service` (pick: choose among the tasks)."""
    def fault(target):
        tasks = target.running_tasks(service)
        if not tasks:
            raise RuntimeError('%s has no running task to kill' % service)
        return [kill_task(target, service, (pick or random.choice)(tasks))]
    fault.__name__ = 'kill_' + service
    return fault


def kill_pg_primary(target):
    primaries = pg_primaries(target)
    assert len(primaries) == 1, 'no single PostgreSQL primary to kill: %s' % primaries
    return [dict(kill_task(target, primaries[0]), role='primary')]


def kill_pg_standby(target):
    states = pg_states(target)
    standbys = [m for m, s in states.items() if s and not s['primary']]
    assert standbys, 'no PostgreSQL standby to kill'
    return [dict(kill_task(target, random.choice(standbys)), role='standby')]


def kill_every_pg_member(target):
    """Every PostgreSQL member at once, as a power loss of a one-machine deployment: no primary
    is left to rejoin, so the members must elect the most advanced among them."""
    states = pg_states(target)
    roles = {m: 'primary' if s and s['primary'] else 'standby' for m, s in states.items()}
    return [dict(kill_task(target, member), role=roles[member]) for member in PG_NODES]


def partition_pg_primary(network='boxoffice_db', outage=60.0):
    """The primary's container cut off the database network for `outage` seconds: the standbys
    promote one of them, the isolated primary cannot confirm a commit (no standby acknowledges),
    and once reconnected it must stop taking writes and rejoin under the new primary."""
    def fault(target):
        primaries = pg_primaries(target)
        assert len(primaries) == 1, 'expected one primary, found %s' % primaries
        task = target.task(primaries[0])
        target.engine.partition_task(task, network)
        cut = {'service': primaries[0], 'container': container_id(task)[:12], 'role': 'primary',
               'partitioned_s': outage}
        time.sleep(outage)
        target.engine.heal_task_partition(task, network)
        return [cut]
    return fault


def kill_redis_master(target):
    master = redis_master(target)
    assert master, 'no single Redis master to kill'
    return [dict(kill_task(target, master), role='master')]


def kill_promoted_primaries(rounds=3, promotion_timeout=120):
    """Kill the primary, then each newly promoted primary as soon as it answers as one, `rounds`
    times; the record has every kill and how long each promotion took."""
    def fault(target):
        kills = kill_pg_primary(target)
        for _ in range(rounds):
            killed = set(k['container'] for k in kills)
            start = now()
            promoted = None
            while promoted is None and now() - start < promotion_timeout:
                states = pg_states(target)
                promoted = next((m for m, s in states.items() if s and s['primary']
                                 and container_id(s['task'])[:12] not in killed), None)
                if promoted is None:
                    time.sleep(0.2)
            if promoted is None:
                kills.append({'role': 'promoted primary', 'error': 'no promotion within %ss' % promotion_timeout})
                break
            kills.append(dict(kill_task(target, promoted, states[promoted]['task']), role='promoted primary',
                              promoted_after_s=round(now() - start, 2)))
        return kills
    fault.__name__ = 'kill_promoted_primaries'
    return fault


# --------------------------------------------------------------------------------------------
# Restoring a member that cannot come back by itself (a test-environment repair, reported).


def reclone_broken_pg_members(target, wait=120):
    """Re-clone every PostgreSQL member that does not answer: scale to 0, remove its data volume,
    scale to 1 (it clones from the primary). Only for a stack already judged, and only while
    exactly one primary runs: without one, a member's data may be the only copy of confirmed
    orders, and it stays for inspection. Returns the re-cloned members."""
    states = pg_states(target)
    if len(pg_primaries(target, states)) != 1:
        print('not re-cloning any member: no single primary runs, every data directory is kept')
        return []
    broken = [m for m, s in states.items() if s is None]
    for member in broken:
        tasks = target.engine.tasks(member)
        node = next((t.get('NodeID') for t in tasks if t.get('NodeID')), None)
        target.engine.scale(member, 0)
        deadline = now() + 120
        while now() < deadline and any(t['Status']['State'] in ('running', 'starting', 'preparing')
                                       for t in target.engine.tasks(member)):
            time.sleep(1)
        time.sleep(2)
        for _ in range(30):
            try:
                target.engine.remove_volume(node, PG_VOLUME_PREFIX + member)
                break
            except docker.errors.APIError as exc:
                if 'no such volume' in str(exc).lower():
                    break
                time.sleep(2)
        target.engine.scale(member, 1)
    deadline = now() + wait
    while broken and now() < deadline and any(pg_state(target, m) is None for m in broken):
        time.sleep(2)
    return broken


# --------------------------------------------------------------------------------------------
# A case.


def longest_gap(times, start, end):
    """Longest time in [start, end] with no confirmed order (edges included)."""
    points = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max(b - a for a, b in zip(points, points[1:])) if end > start else 0.0


# pg-node.sh's log lines that say how a member came back: followed as it was, rewound, re-cloned.
PG_REJOIN_LOG = re.compile(r'(pg-node\[[^]]+\]: .*(rewind|clon|diverged|following|fencing|former primary|'
                           r'becoming primary|promoting|not streaming|could not rejoin|cut short|does not answer).*)')


def pg_rejoin_log(target, members, since):
    """{member: pg-node.sh's lines since `since` on how it rejoined} for the PostgreSQL members."""
    found = {}
    for member in sorted(members):
        lines = [m.group(1)[:200] for m in map(PG_REJOIN_LOG.search, target.engine.service_log(member, since)) if m]
        found[member] = lines[-12:]
    return found


def run_case(target, token, item, case, fault, recovery_timeout=240.0, warmup_orders=5,
             warmup_timeout=120.0, tail=10.0, api_buyers=3, web_buyers=1, api_pacing=1.0,
             precondition_timeout=300.0):
    """One chaos case; returns its record (see README.md). Fails nothing itself: the test asserts."""
    waited, problems = wait_full_redundancy(target, precondition_timeout)
    if waited is None:
        raise AssertionError('the stack is not fully redundant before the fault (after %ss): %s'
                             % (precondition_timeout, problems))
    buyers = Buyers(target, token, item, api_buyers, web_buyers, api_pacing).start()
    began = now()
    while len(buyers.confirmed()) < warmup_orders or not [a for a in buyers.confirmed() if a.kind == 'web']:
        if now() - began > warmup_timeout:
            buyers.stop()
            raise AssertionError('buyers got %d orders (web: %d) in %ss before any fault; failures: %s' % (
                len(buyers.confirmed()), len([a for a in buyers.confirmed() if a.kind == 'web']), warmup_timeout,
                collections.Counter(a.error for a in buyers.snapshot() if not a.ok).most_common(3)))
        time.sleep(0.5)
    fault_at = now()
    try:
        killed = fault(target)
    except Exception:
        buyers.stop()
        raise
    # Times count from when the first fault struck, not from when its target was looked up.
    fault_at = next((k['at'] for k in killed if 'at' in k), fault_at)
    recovery_s, problems = wait_full_redundancy(target, recovery_timeout - (now() - fault_at))
    if recovery_s is not None:
        recovery_s = now() - fault_at  # from the fault, not from the end of a multi-kill fault
        recovered_at = now()
        # Keep ordering until the recovered stack has confirmed orders of both kinds again.
        deadline = now() + max(tail, 120)
        while now() < deadline and (now() < recovered_at + tail or
                                    {'api', 'web'} - set(a.kind for a in buyers.confirmed(recovered_at))):
            time.sleep(0.5)
    stopped_at = now()
    stuck = buyers.stop()
    attempts = buyers.snapshot()
    confirmed = [a for a in attempts if a.ok]
    failed = [a for a in attempts if not a.ok]
    missing, in_pg = missing_orders(target, token, [a.code for a in confirmed])
    after_fault = [a.ended for a in confirmed if a.started >= fault_at]  # begun after it, not in flight
    hit = set(k['service'] for k in killed if k.get('service') in PG_NODES)
    hit.update(m for k in killed for m in k.get('pg_members', ()))
    record = {
        'case': case, 'target': target.name, 'started': utc(began), 'fault_at': utc(fault_at),
        'killed': [{k: v for k, v in kill.items() if k != 'at'} for kill in killed],
        'orders_confirmed': len(confirmed),
        'orders_confirmed_api': sum(1 for a in confirmed if a.kind == 'api'),
        'orders_confirmed_web': sum(1 for a in confirmed if a.kind == 'web'),
        'confirmed_missing': len(missing), 'missing_codes': missing[:20], 'confirmed_in_postgres': in_pg,
        'failed_attempts': len(failed),
        'failed_api': sum(1 for a in failed if a.kind == 'api'),
        'failed_web': sum(1 for a in failed if a.kind == 'web'),
        'errors': collections.Counter(a.error for a in failed).most_common(5),
        'longest_gap_s': round(longest_gap([a.ended for a in confirmed], fault_at, stopped_at), 2),
        'first_order_after_fault_s': round(min(after_fault) - fault_at, 2) if after_fault else None,
        'baseline_gap_s': round(longest_gap([a.ended for a in confirmed], began, fault_at), 2),
        'recovery_s': round(recovery_s, 1) if recovery_s is not None else None,
        'recovery_timeout_s': recovery_timeout,
        'unrecovered': problems,
        'buyers_stuck': stuck,
        'pg_rejoin': pg_rejoin_log(target, hit, fault_at) if hit else {},
        'duration_s': round(stopped_at - began, 1),
    }
    return record


def report(record, path=REPORT):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'a', encoding='utf-8') as handle:
        handle.write(json.dumps(record) + '\n')
    print('\nCHAOS %s' % json.dumps(record))


COLUMNS = (('case', 'case', 30), ('target', 'target', 7), ('confirmed', 'orders_confirmed', 9),
           ('web', 'orders_confirmed_web', 4), ('missing', 'confirmed_missing', 7),
           ('failed', 'failed_attempts', 6), ('gap s', 'longest_gap_s', 7),
           ('recovery s', 'recovery_s', 10), ('not back at timeout', 'unrecovered', 0))


def table(records):
    lines = [' '.join(title.ljust(width) if width else title for title, _, width in COLUMNS)]
    for record in records:
        cells = []
        for _, key, width in COLUMNS:
            value = record.get(key)
            if key == 'recovery_s' and value is None:
                value = '>%s' % record.get('recovery_timeout_s')
            if key == 'unrecovered':
                value = '; '.join(value or []) or '-'
            cells.append(str(value).ljust(width) if width else str(value))
        lines.append(' '.join(cells))
    return '\n'.join(lines)


def read_report(path=REPORT):
    with open(path, encoding='utf-8') as handle:
        return [json.loads(line) for line in handle if line.strip()]


if __name__ == '__main__':
    print(table(read_report(sys.argv[1] if len(sys.argv) > 1 else REPORT)))
