"""The nfs role's ganesha server, exercised with a userspace NFS client (libnfs-utils).

This kernel has neither an NFS server nor an NFS client, so the kernel implementation and the
nodes' kernel mounts (Docker volumes of type nfs) are NOT exercised here; this test covers the
ganesha service the role builds and runs, and the mount description it hands to pretix/nginx.
Everything is named bxtest-nfs-<random> and removed afterwards. The first run builds the
ganesha image (about a minute) on the images role's Debian base (conftest.debian_base_image).
"""

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import REPO_ROOT, debian_base_image

ANSIBLE_PLAYBOOK = os.path.join(REPO_ROOT, '.venv', 'bin', 'ansible-playbook')
PORT = 12049
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
def ganesha(tmp_path, docker_client):
    if not shutil.which('nfs-cp'):
        pytest.fail('nfs-cp missing: apt-get install -y libnfs-utils')
    prefix = 'bxtest-nfs-%s' % uuid.uuid4().hex[:8]
    playbook = tmp_path / 'nfs.yml'
    out = tmp_path / 'mount.json'
    playbook.write_text(PLAYBOOK % {'out': out})
    node_id = docker_client.info()['Swarm']['NodeID']
    extra = {
        'nfs_enabled': True, 'nfs_server_implementation': 'ganesha', 'nfs_server_address': '127.0.0.1',
        'nfs_ganesha_service': prefix, 'nfs_ganesha_volume': prefix + '-export',
        'nfs_ganesha_port': PORT, 'nfs_ganesha_base_image': debian_base_image(docker_client),
        'nfs_ganesha_constraints': ['node.id == %s' % node_id], 'nfs_volume_name': prefix + '-data',
    }
    args = [ANSIBLE_PLAYBOOK if os.path.exists(ANSIBLE_PLAYBOOK) else 'ansible-playbook', str(playbook),
            '-e', json.dumps(extra)]
    try:
        runs = [subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
                for _ in range(2)]
        yield prefix, runs, json.loads(out.read_text()) if out.exists() else None
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


def wait_running(docker_client, prefix, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        containers = docker_client.containers.list(
            filters={'label': 'com.docker.swarm.service.name=' + prefix, 'health': 'healthy'})
        if containers:
            return containers[0]
        time.sleep(2)
    pytest.fail('ganesha service %s did not become healthy' % prefix)


def test_ganesha_serves_the_export(ganesha, docker_client, tmp_path):
    prefix, runs, mount = ganesha
    for run in runs:
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert 'changed=0' in runs[1].stdout, 'second run not idempotent:\n' + runs[1].stdout[-3000:]

    # What pretix and nginx get: a per-node Docker volume backed by the export.
    assert mount['source'] == prefix + '-data' and mount['target'] == '/data'
    options = mount['driver_config']['options']
    assert options['type'] == 'nfs' and options['device'] == ':/pretix'
    assert options['o'].startswith('addr=127.0.0.1,')

    container = wait_running(docker_client, prefix)
    url = 'nfs://127.0.0.1/pretix/%s?version=4&nfsport=%d'
    payload = tmp_path / 'upload.txt'
    payload.write_text('written over NFS %s\n' % uuid.uuid4())
    subprocess.run(['nfs-cp', str(payload), url % ('upload.txt', PORT)], check=True, timeout=60)

    listing = subprocess.run(['nfs-ls', url % ('', PORT)], check=True, capture_output=True,
                             text=True, timeout=60).stdout
    assert 'upload.txt' in listing

    back = tmp_path / 'download.txt'
    subprocess.run(['nfs-cp', url % ('upload.txt', PORT), str(back)], check=True, timeout=60)
    assert back.read_text() == payload.read_text()

    # Root is squashed to pretix's uid, so files written by any client belong to pretix.
    owner = container.exec_run(['stat', '-c', '%u', '/export/upload.txt']).output.decode().strip()
    assert owner == '15371'
