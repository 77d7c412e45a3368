"""The demo event and its full-rights API token are off unless an inventory asks for them: off in
the role's defaults and in the production example, on in the inventories whose tests order from
the demo event with that token (local: the quick start and tests/e2e; testcluster: tests/chaos and
molecule). Read through ansible-inventory, so group_vars precedence is Ansible's own. No Docker.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO_ROOT


def load(*path):
    with open(os.path.join(REPO_ROOT, *path), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def inventory_hostvars(name):
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-inventory'), '--list',
                           '-i', os.path.join(REPO_ROOT, 'inventories', name, 'hosts.yml')],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(proc.stdout)['_meta']['hostvars']


def test_the_role_default_is_off_and_documented_so():
    assert load('roles', 'pretix_bootstrap', 'defaults', 'main.yml')['pretix_bootstrap_demo'] is False
    spec = load('roles', 'pretix_bootstrap', 'meta', 'argument_specs.yml')
    assert spec['argument_specs']['main']['options']['pretix_bootstrap_demo']['default'] is False


@pytest.mark.parametrize('inventory, demo', [('production-example', False), ('local', True), ('testcluster', True)])
def test_inventories(inventory, demo):
    hostvars = inventory_hostvars(inventory)
    assert hostvars
    for host, variables in hostvars.items():
        assert variables.get('pretix_bootstrap_demo', False) is demo, host
