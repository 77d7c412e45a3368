"""The nfs role's client lists as the kernel server and nfs-ganesha read them: both templates
rendered with Ansible from the role's defaults and vars, with the clients set by hand and with the
default (every node of the swarm, from a docker_swarm_info result given here), and the role's input
check run on the old string form. No Docker needed.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from rendering import render

TEMPLATES = ['boxoffice.exports.j2', 'ganesha.conf.j2']
OPTIONS = '(rw,sync,no_subtree_check,root_squash)'
# What the role reads on the NFS node about the default bridge ganesha's container is on:
# docker_network_info's network, and the setup module's facts of its interface.
def bridge(interface, address):
    return {'nfs_ganesha_local_network_info': {'network': {'Name': 'bridge', 'Options': {
                'com.docker.network.bridge.name': interface}}},
            'nfs_ganesha_local_interface_facts': {'ansible_facts': {
                'ansible_' + interface.replace('-', '_'): {'device': interface, 'ipv4': {'address': address}}}}}


# docker_swarm_info(nodes: true, verbose_output: true): a manager that reports 0.0.0.0 as its
# Status.Addr (Docker does when it listens on 0.0.0.0), a manager that reports its address, an
# IPv6 manager, and a worker.
SWARM = {'nodes': [
    {'ID': 'm1', 'Status': {'State': 'ready', 'Addr': '0.0.0.0'},
     'ManagerStatus': {'Leader': True, 'Reachability': 'reachable', 'Addr': '10.0.0.1:2377'}},
    {'ID': 'm2', 'Status': {'State': 'ready', 'Addr': '10.0.0.2'},
     'ManagerStatus': {'Reachability': 'reachable', 'Addr': '10.0.0.2:2377'}},
    {'ID': 'm3', 'Status': {'State': 'ready'},
     'ManagerStatus': {'Reachability': 'reachable', 'Addr': '[fd00::3]:2377'}},
    {'ID': 'w1', 'Status': {'State': 'ready', 'Addr': '10.0.0.4'}},
]}


def blocks(text):
    """{block name: body text} of ganesha.conf's top-level blocks, comments removed."""
    text = re.sub(r'#[^\n]*', '', text)
    found, depth, name, start = {}, 0, None, 0
    for match in re.finditer(r'([A-Za-z_0-9]+)\s*\{|\}', text):
        if match.group(0) == '}':
            depth -= 1
            if depth == 0:
                found[name] = text[start:match.start()]
        else:
            if depth == 0:
                name, start = match.group(1), match.end()
            depth += 1
    assert depth == 0, 'unbalanced ganesha.conf'
    return found


def settings(body):
    """{option: value} of the options directly in a block body (nested blocks left out)."""
    flat = re.sub(r'[A-Za-z_]+\s*\{[^{}]*\}', '', body)
    return {k.strip(): v.strip() for k, v in re.findall(r'([A-Za-z_]+)\s*=\s*([^;]*);', flat)}


def export_clients(exports):
    """[(path, [(client, options)])] of the exports file's entries."""
    entries = []
    for line in exports.splitlines():
        if line.strip() and not line.startswith('#'):
            path, *clients = line.split()
            entries.append((path, [re.fullmatch(r'([^(]+)(\(.*\))', c).groups() for c in clients]))
    return entries


def ganesha_clients(conf):
    """(the EXPORT's own options, the Clients list of its CLIENT block, that block's options).
    The entries must be bare: ganesha 4.3 lets no client in through a quoted address."""
    export = blocks(conf)['EXPORT']
    [client] = re.findall(r'CLIENT\s*\{([^{}]*)\}', export)
    options = settings(client)
    return settings(export), [c.strip() for c in options.pop('Clients').split(',')], options


def test_explicit_clients(tmp_path):
    rendered = render(tmp_path, 'nfs', TEMPLATES, extra_vars=dict(
        bridge('br-docker', '10.99.0.1'), nfs_clients=['10.0.0.0/24', '192.0.2.7']))

    assert export_clients(rendered['boxoffice.exports.j2']) == [
        ('/srv/boxoffice/pretix-data', [('10.0.0.0/24', OPTIONS), ('192.0.2.7', OPTIONS)])]
    assert '*' not in rendered['boxoffice.exports.j2'].split('\n', 1)[1]

    export, clients, options = ganesha_clients(rendered['ganesha.conf.j2'])
    # Nobody but the listed clients: the EXPORT itself grants nothing.
    assert export['Access_Type'] == 'None'
    assert export['Squash'] == 'Root_Squash'
    assert clients == ['10.0.0.0/24', '192.0.2.7', '10.99.0.1']
    assert options == {'Protocols': '4', 'Access_Type': 'RW'}


def test_default_is_every_node_of_the_swarm(tmp_path):
    rendered = render(tmp_path, 'nfs', TEMPLATES, extra_vars=dict(
        bridge('docker0', '172.17.0.1'), nfs_swarm_info=SWARM))

    nodes = ['10.0.0.1', '10.0.0.2', 'fd00::3', '10.0.0.4']
    [(path, clients)] = export_clients(rendered['boxoffice.exports.j2'])
    assert clients == [(node, OPTIONS) for node in nodes]
    assert ganesha_clients(rendered['ganesha.conf.j2'])[1] == nodes + ['172.17.0.1']


def test_ganesha_without_the_local_gateway(tmp_path):
    rendered = render(tmp_path, 'nfs', ['ganesha.conf.j2'], extra_vars={
        'nfs_clients': ['192.0.2.1'], 'nfs_ganesha_local_mounts': False})
    assert ganesha_clients(rendered['ganesha.conf.j2'])[1] == ['192.0.2.1']


VALIDATE = '''
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check the nfs role's input
      ansible.builtin.include_role:
        name: boxoffice.pretix.nfs
        tasks_from: validate.yml
'''


@pytest.mark.parametrize('clients, accepted', [
    ([], True),
    (['10.0.0.0/24', '192.0.2.7', 'fd00::/64', '2001:db8::1'], True),
    ('*', False),
    ('10.0.0.0/24', False),
    (['*'], False),
    (['10.0.0.0/24 10.0.1.0/24'], False),
    (['node-1.example.org'], False),
])
def test_the_clients_must_be_a_list_of_addresses(tmp_path, clients, accepted):
    playbook = tmp_path / 'validate.yml'
    playbook.write_text(VALIDATE)
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), str(playbook),
               '-i', 'localhost,', '-e', 'ansible_python_interpreter=%s' % sys.executable,
               '-e', json.dumps({'nfs_clients': clients})]
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) is accepted, output
    if not accepted:
        assert 'nfs_clients must be a list of IP addresses or CIDR networks' in output, output
