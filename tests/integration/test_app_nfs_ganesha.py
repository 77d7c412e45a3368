"""The nfs role's ganesha server, exercised with a userspace NFS client (libnfs-utils).

This kernel has neither an NFS server nor an NFS client, so the kernel implementation and the
nodes' kernel mounts (Docker volumes of type nfs) are NOT exercised here; this test covers the
ganesha service the role builds and runs, the mount description it hands to pretix/nginx, and
its client list: this machine's own mounts pass through Docker's port mapping (the hairpin path of
an NFS node that runs pretix) and are allowed by default; a client outside the list is refused.
Everything is named bxtest-nfs-<random> and removed afterwards. The first run builds the
ganesha image (about a minute) on the images role's Debian base (conftest.debian_base_image).
"""

import base64
import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import REPO_ROOT, debian_base_image

ANSIBLE_PLAYBOOK = os.path.join(REPO_ROOT, '.venv', 'bin', 'ansible-playbook')
PORT = 12049
# What libnfs prints when ganesha turns a client away, not a connection failure: ganesha hides
# an export from a client it does not serve (NFS4ERR_NOENT on the export's path).
REFUSED = re.compile(r'NFS4ERR_NOENT|NFS4ERR_ACCESS|NFS4ERR_PERM')
PLAYBOOK = '''
- hosts: localhost
  gather_facts: false
  roles:
    - boxoffice.pretix.nfs
  tasks:
    - name: Hand the mount description to the test
      ansible.builtin.copy:
        content: "{{ nfs_data_mount | to_json }}"
        dest: "%(out)s"
        mode: "0644"
'''


@pytest.fixture
def deploy(tmp_path, docker_client):
    """deploy(**extra_vars) runs the role twice on a bxtest-nfs-<random> ganesha service and returns
    (prefix, the two runs, the mount description it handed over); every call deploys the same service."""
    if not shutil.which('nfs-cp'):
        pytest.fail('nfs-cp missing: apt-get install -y libnfs-utils')
    prefix = 'bxtest-nfs-%s' % uuid.uuid4().hex[:8]
    playbook = tmp_path / 'nfs.yml'
    out = tmp_path / 'mount.json'
    playbook.write_text(PLAYBOOK % {'out': out})
    node_id = docker_client.info()['Swarm']['NodeID']
    base = {
        'nfs_enabled': True, 'nfs_server_implementation': 'ganesha', 'nfs_server_address': '127.0.0.1',
        'nfs_ganesha_service': prefix, 'nfs_ganesha_volume': prefix + '-export',
        'nfs_ganesha_port': PORT, 'nfs_ganesha_base_image': debian_base_image(docker_client),
        'nfs_ganesha_constraints': ['node.id == %s' % node_id], 'nfs_volume_name': prefix + '-data',
    }

    def run(**extra):
        args = [ANSIBLE_PLAYBOOK if os.path.exists(ANSIBLE_PLAYBOOK) else 'ansible-playbook', str(playbook),
                '-e', json.dumps(dict(base, **extra))]
        runs = [subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
                for _ in range(2)]
        for done in runs:
            assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return prefix, runs, json.loads(out.read_text())

    try:
        yield run
    finally:
        for service in docker_client.services.list(filters={'name': prefix}):
            service.remove()
        for config in docker_client.configs.list(filters={'name': prefix}):
            config.remove()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                for container in docker_client.containers.list(
                        all=True, filters={'label': 'com.docker.swarm.service.name=' + prefix}):
                    container.remove(force=True)
                docker_client.volumes.get(prefix + '-export').remove()
                break
            except Exception:  # still in use while Swarm stops the task
                time.sleep(2)


def wait_running(docker_client, prefix, timeout=120, replacing=None):
    """The service's healthy container (another than `replacing`, after an update)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        containers = [c for c in docker_client.containers.list(
            filters={'label': 'com.docker.swarm.service.name=' + prefix, 'health': 'healthy'})
            if c.id != replacing]
        if containers:
            return containers[0]
        time.sleep(2)
    pytest.fail('ganesha service %s did not become healthy' % prefix)


def published_clients(docker_client, prefix):
    """The Clients list of the ganesha.conf the service runs with (its Swarm config)."""
    service = docker_client.services.get(prefix)
    [ref] = service.attrs['Spec']['TaskTemplate']['ContainerSpec']['Configs']
    conf = base64.b64decode(docker_client.configs.get(ref['ConfigID']).attrs['Spec']['Data']).decode()
    [line] = re.findall(r'^\s*Clients\s*=\s*(.*);$', conf, re.M)
    return [client.strip() for client in line.split(',')]


def gateway(container):
    """Where this machine's connections to 127.0.0.1:PORT reach ganesha from: Docker's userland
    proxy forwards them from the gateway of the container's network, the default bridge."""
    return container.attrs['NetworkSettings']['Networks']['bridge']['Gateway']


def node_address(docker_client):
    """This node's address in the swarm, the one the role lists by default."""
    node = docker_client.nodes.get(docker_client.info()['Swarm']['NodeID']).attrs
    address = node['Status'].get('Addr', '0.0.0.0')
    if address == '0.0.0.0':
        address = node['ManagerStatus']['Addr'].rsplit(':', 1)[0].strip('[]')
    return address


def nfs(*args):
    return subprocess.run(['nfs-' + args[0], *args[1:]], capture_output=True, text=True, timeout=60)


URL = 'nfs://127.0.0.1/pretix/%s?version=4&nfsport=' + str(PORT)
# An address that is not this machine (TEST-NET-2).
ELSEWHERE = '198.51.100.7'


def test_ganesha_serves_the_export(deploy, docker_client, tmp_path):
    prefix, runs, mount = deploy()
    assert 'changed=0' in runs[1].stdout, 'second run not idempotent:\n' + runs[1].stdout[-3000:]

    # What pretix and nginx get: a per-node Docker volume backed by the export.
    assert mount['source'] == prefix + '-data' and mount['target'] == '/data'
    options = mount['driver_config']['options']
    assert options['type'] == 'nfs' and options['device'] == ':/pretix'
    assert options['o'].startswith('addr=127.0.0.1,')

    # The default clients: this swarm's one node, and the bridge gateway that mounts forwarded
    # by Docker's proxy come from. This machine mounts its own ganesha both ways: through
    # 127.0.0.1 (the proxy, the hairpin path) and through its swarm address (iptables DNAT).
    container = wait_running(docker_client, prefix)
    node = node_address(docker_client)
    assert published_clients(docker_client, prefix) == [node, gateway(container)]
    own = nfs('ls', 'nfs://%s/pretix/?version=4&nfsport=%d' % (node, PORT))
    assert own.returncode == 0, own.stdout + own.stderr

    payload = tmp_path / 'upload.txt'
    payload.write_text('written over NFS %s\n' % uuid.uuid4())
    subprocess.run(['nfs-cp', str(payload), URL % 'upload.txt'], check=True, timeout=60)

    listing = subprocess.run(['nfs-ls', URL % ''], check=True, capture_output=True,
                             text=True, timeout=60).stdout
    assert 'upload.txt' in listing

    back = tmp_path / 'download.txt'
    subprocess.run(['nfs-cp', URL % 'upload.txt', str(back)], check=True, timeout=60)
    assert back.read_text() == payload.read_text()

    # Root is squashed to pretix's uid, so files written by any client belong to pretix.
    owner = container.exec_run(['stat', '-c', '%u', '/export/upload.txt']).output.decode().strip()
    assert owner == '15371'


def test_ganesha_refuses_clients_not_in_the_list(deploy, docker_client, tmp_path):
    """A client outside nfs_clients cannot list, read or write the export; the same client, once
    listed, can. This machine reaches ganesha through 127.0.0.1 from the bridge gateway, so the automatic
    gateway entry is turned off and the gateway is listed by hand in the second deployment."""
    payload = tmp_path / 'upload.txt'
    payload.write_text('written over NFS %s\n' % uuid.uuid4())

    prefix, runs, dummy = deploy(nfs_clients=[ELSEWHERE], nfs_ganesha_local_mounts=False)
    assert published_clients(docker_client, prefix) == [ELSEWHERE]
    refused = wait_running(docker_client, prefix)
    # The server answers (its port is open and healthy) and turns the client away, on both paths.
    for url in (URL, 'nfs://%s/pretix/%%s?version=4&nfsport=%d' % (node_address(docker_client), PORT)):
        listing = nfs('ls', url % '')
        assert listing.returncode != 0, 'a client outside the list listed the export:\n' + listing.stdout
        assert REFUSED.search(listing.stderr), listing.stderr
        write = nfs('cp', str(payload), url % 'upload.txt')
        assert write.returncode != 0 and REFUSED.search(write.stderr), write.stdout + write.stderr
    assert refused.exec_run(['test', '-e', '/export/upload.txt']).exit_code == 1

    # The same client, once listed, is let in.
    listed = gateway(refused)
    deploy(nfs_clients=[ELSEWHERE, listed], nfs_ganesha_local_mounts=False)
    assert published_clients(docker_client, prefix) == [ELSEWHERE, listed]
    wait_running(docker_client, prefix, replacing=refused.id)
    deadline = time.time() + 60
    while nfs('cp', str(payload), URL % 'upload.txt').returncode != 0:
        assert time.time() < deadline, 'the listed client is still refused'
        time.sleep(2)
    assert 'upload.txt' in nfs('ls', URL % '').stdout
