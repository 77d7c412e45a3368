"""The nfs role's exports as the servers will read them: /etc/exports.d/boxoffice.exports (kernel
server) and ganesha.conf, rendered with Ansible from the role's templates, defaults and vars
against the repository's inventories. Only the swarm's nodes may mount pretix's /data. No Docker
needed.
"""

import os
import re

import pytest
import yaml

from conftest import REPO_ROOT
from rendering import render

TEMPLATES = ['boxoffice.exports.j2', 'ganesha.conf.j2']
# docker_network_info's answer for docker_gwbridge, as server_ganesha.yml registers it.
GWBRIDGE = {'nfs_ganesha_gwbridge': {'exists': True, 'network': {'IPAM': {'Config': [
    {'Subnet': '172.18.0.0/16', 'Gateway': '172.18.0.1'}]}}}}


def inventory_addresses(name):
    """ansible_host of every host of swarm_managers and swarm_workers in inventories/<name>."""
    with open(os.path.join(REPO_ROOT, 'inventories', name, 'hosts.yml'), encoding='utf-8') as handle:
        groups = yaml.safe_load(handle)['all']['children']
    return [host['ansible_host'] for group in ('swarm_managers', 'swarm_workers')
            for host in (groups[group].get('hosts') or {}).values()]


def kernel_clients(text):
    """{client: options} of the one export line; fails on any other line."""
    [line] = [line for line in text.splitlines() if line.strip() and not line.startswith('#')]
    path, *entries = line.split()
    assert path == '/srv/boxoffice/pretix-data'
    clients = dict(re.fullmatch(r'([^()]+)\(([^()]*)\)', entry).groups() for entry in entries)
    assert all(options == 'rw,sync,no_subtree_check,root_squash' for options in clients.values())
    return clients


def ganesha_export(text):
    """(export-level Access_Type, [clients of its CLIENT blocks with their Access_Type])."""
    export = text[text.index('EXPORT {'):]
    access = re.search(r'^    Access_Type = (\w+);', export, re.M).group(1)
    clients = [(tuple(c.strip() for c in names.split(',')), kind) for names, kind in re.findall(
        r'CLIENT \{\s*Clients = ([^;]*);\s*Access_Type = (\w+);\s*\}', export)]
    return access, clients


@pytest.fixture(scope='module')
def production(tmp_path_factory):
    return render(tmp_path_factory.mktemp('nfs'), 'nfs', TEMPLATES,
                  inventory=os.path.join(REPO_ROOT, 'inventories', 'production-example', 'hosts.yml'),
                  extra_vars=GWBRIDGE)


def test_kernel_export_goes_to_the_clusters_nodes_only(production):
    clients = kernel_clients(production['boxoffice.exports.j2'])
    assert sorted(clients) == sorted(inventory_addresses('production-example'))
    assert '*' not in ''.join(clients)


def test_ganesha_grants_the_nodes_and_its_gateway_and_nobody_else(production):
    access, clients = ganesha_export(production['ganesha.conf.j2'])
    assert access == 'None'
    [(names, kind)] = clients
    assert kind == 'RW'
    assert sorted(names) == sorted(inventory_addresses('production-example') + ['172.18.0.1'])


def test_one_machine_exports_to_itself(tmp_path):
    """inventories/local: localhost, by name and loopback (nfs_enabled is off there by default,
    but a stack that turns it on, like the ganesha integration test, must still mount)."""
    rendered = render(tmp_path, 'nfs', TEMPLATES, inventory=os.path.join(REPO_ROOT, 'inventories', 'local', 'hosts.yml'))
    assert sorted(kernel_clients(rendered['boxoffice.exports.j2'])) == ['127.0.0.1', 'localhost']
    access, [(names, kind)] = ganesha_export(rendered['ganesha.conf.j2'])
    assert (access, sorted(names), kind) == ('None', ['127.0.0.1', 'localhost'], 'RW')


def test_addresses_follow_the_inventory(tmp_path):
    """swarm_advertise_addr is added when set; a host with no address is exported by name;
    hosts only listed for removal are not nodes any more."""
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'all': {'children': {
        'swarm_managers': {'hosts': {'mgr1': {'ansible_host': '192.0.2.10', 'swarm_advertise_addr': '10.1.0.10'}}},
        'swarm_workers': {'hosts': {'worker1': {}}},
        'swarm_remove': {'hosts': {'gone1': {'ansible_host': '192.0.2.99'}}}}}}))
    rendered = render(tmp_path, 'nfs', TEMPLATES, inventory=str(inventory))
    assert sorted(kernel_clients(rendered['boxoffice.exports.j2'])) == ['10.1.0.10', '192.0.2.10', 'worker1']


@pytest.mark.parametrize('clients', [['10.0.0.0/24'], '10.0.0.0/24'], ids=['list', 'string'])
def test_an_explicit_client_list_wins(tmp_path, clients):
    """A list, or one client as a string as earlier versions took it."""
    rendered = render(tmp_path, 'nfs', TEMPLATES, extra_vars={'nfs_clients': clients})
    assert list(kernel_clients(rendered['boxoffice.exports.j2'])) == ['10.0.0.0/24']
    assert ganesha_export(rendered['ganesha.conf.j2'])[1] == [(('10.0.0.0/24',), 'RW')]
