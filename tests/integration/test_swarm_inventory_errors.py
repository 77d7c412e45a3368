"""Bad inventories make playbooks/swarm.yml fail early, say what to fix, and touch no node.

The target is a fresh docker-in-docker node whose engine is not started yet: after a rejected
run it must still have no dockerd and no swarm, which proves nothing was half-applied.
"""

import os
import subprocess
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = 'bxtest-badinv'
NODE = CLUSTER + '-node1'


def run_playbook(*args, inventory=None):
    command = [os.path.join(REPO_ROOT, '.venv', 'bin', 'ansible-playbook')]
    if inventory:
        command += ['-i', str(inventory)]
    return subprocess.run(command + list(args), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.fixture(scope='module')
def fresh_node():
    created = run_playbook('playbooks/test_cluster.yml', '-e', 'test_cluster_name=' + CLUSTER,
                           '-e', 'test_cluster_node_count=1')
    assert created.returncode == 0, created.stdout[-3000:]
    yield NODE
    run_playbook('playbooks/test_cluster.yml', '-e', 'test_cluster_name=' + CLUSTER,
                 '-e', 'test_cluster_state=absent')


def write_inventory(tmp_path, body):
    path = tmp_path / 'hosts.yml'
    path.write_text(textwrap.dedent(body))
    return path


def assert_untouched(node):
    dockerd = subprocess.run(['docker', 'exec', node, 'pgrep', '-x', 'dockerd'],
                             capture_output=True, text=True, check=False)
    assert dockerd.returncode == 1, 'dockerd was started on %s: the run was half-applied' % node


def assert_rejected(result, *phrases):
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for phrase in phrases:
        assert phrase in output, 'missing %r in:\n%s' % (phrase, output[-3000:])


def test_inventory_without_manager(tmp_path, fresh_node):
    inventory = write_inventory(tmp_path, f'''
        all:
          vars: {{ansible_connection: community.docker.docker, ansible_python_interpreter: /usr/bin/python3}}
          children:
            swarm_workers:
              hosts:
                worker1: {{ansible_host: {fresh_node}}}
        ''')
    result = run_playbook('playbooks/swarm.yml', inventory=inventory)
    assert_rejected(result, "The inventory has no host in group 'swarm_managers'")
    assert_untouched(fresh_node)


def test_label_for_host_not_in_inventory(tmp_path, fresh_node):
    inventory = write_inventory(tmp_path, f'''
        all:
          vars:
            ansible_connection: community.docker.docker
            ansible_python_interpreter: /usr/bin/python3
            swarm_placement: {{pg-0: manager1, pg-1: db9}}
          children:
            swarm_managers:
              hosts:
                manager1: {{ansible_host: {fresh_node}}}
        ''')
    result = run_playbook('playbooks/swarm.yml', inventory=inventory)
    assert_rejected(result, 'pg-1 -> db9', 'add those hosts to the inventory')
    assert_untouched(fresh_node)


def test_unreachable_node(tmp_path, fresh_node):
    inventory = write_inventory(tmp_path, f'''
        all:
          vars: {{ansible_connection: community.docker.docker, ansible_python_interpreter: /usr/bin/python3}}
          children:
            swarm_managers:
              hosts:
                manager1: {{ansible_host: {fresh_node}}}
            swarm_workers:
              hosts:
                ghost: {{ansible_host: {CLUSTER}-no-such-node}}
        ''')
    result = run_playbook('playbooks/swarm.yml', inventory=inventory)
    assert_rejected(result, 'Cannot reach ghost', 'nothing was changed')
    assert_untouched(fresh_node)
