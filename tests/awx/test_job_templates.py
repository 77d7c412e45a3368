"""Every job template of awx/vars.yml run as AWX runs it: through ansible-runner, from the
collection installed from its tarball, with an empty HOME, the template's extra vars and survey
defaults, and the Vault credential injected as AWX does (--ask-vault-pass, answered by the runner).
Against the deployed local stack, so marked slow and left out of CI; ansible-runner must be
installed (requirements.txt).

The inventory is a copy of inventories/local that names the secret store by absolute path, as a
project inventory names its own; ~ would be the job's empty HOME. Teardown stops the shop, so it
runs only with BOXOFFICE_AWX_DESTRUCTIVE=1 and is followed by a site run.
  BOXOFFICE_VAULT_PASSWORD   vault password file of the store (default ~/.config/boxoffice/vault-password)
"""

import json
import os
import shutil
import sys

import docker
import pytest
import yaml

from conftest import REPO_ROOT, install_collection

sys.path.insert(0, os.path.join(REPO_ROOT, 'tests', 'e2e'))
from test_buy_ticket import psql  # noqa: E402  pylint: disable=wrong-import-position

ansible_runner = pytest.importorskip('ansible_runner')
pytestmark = pytest.mark.slow

REAL_HOME = os.path.expanduser('~')
VAULT_PASSWORD_FILE = os.path.expanduser(os.environ.get('BOXOFFICE_VAULT_PASSWORD', '~/.config/boxoffice/vault-password'))
with open(os.path.join(REPO_ROOT, 'awx', 'vars.yml'), encoding='utf-8') as _handle:
    TEMPLATES = {t['name']: t for t in yaml.safe_load(_handle)['awx_job_templates']}


@pytest.fixture(scope='module')
def awx(tmp_path_factory):
    """Run a job template by name; returns (runner result, stdout text)."""
    work = tmp_path_factory.mktemp('awx')
    dummy, collections = install_collection(work)
    inventory = work / 'inventory'
    shutil.copytree(os.path.join(REPO_ROOT, 'inventories', 'local'), inventory)
    (inventory / 'group_vars' / 'all' / 'secrets.yml').write_text(yaml.safe_dump({
        'secrets_dir': os.path.join(REAL_HOME, '.config/boxoffice/secrets/local'),
        'nginx_tls_dir': os.path.join(REAL_HOME, '.config/boxoffice/tls/local')}))
    with open(VAULT_PASSWORD_FILE, encoding='utf-8') as handle:
        vault_password = handle.read().strip()

    def run(name, extra=None, vault=True, store=None):
        template = TEMPLATES[name]
        extravars = dict(template.get('extra_vars') or {})
        for question in template.get('survey', {}).get('spec', []):
            if 'default' in question and question['default'] != '':
                extravars[question['variable']] = question['default']
        extravars.update(extra or {})
        if store is not None:
            extravars.update(secrets_dir=str(store), nginx_tls_dir=str(store))
        home = tmp_path_factory.mktemp('home')  # what AWX gives every job: nothing
        playbook = 'boxoffice.pretix.' + os.path.basename(template['playbook'])[:-4]
        result = ansible_runner.run(
            private_data_dir=str(tmp_path_factory.mktemp('job')), playbook=playbook,
            inventory=str(inventory / 'hosts.yml'), extravars=extravars,
            cmdline='--ask-vault-pass' if vault else None,
            passwords={r'Vault password:\s*?$': vault_password} if vault else {},
            envvars={'HOME': str(home), 'ANSIBLE_COLLECTIONS_PATH': collections, 'ANSIBLE_NOCOLOR': '1'},
            timeout=template.get('timeout', 3600), quiet=True)
        return result, result.stdout.read(), home

    # Only the credential gives the password, as in AWX.
    saved = os.environ.pop('ANSIBLE_VAULT_PASSWORD_FILE', None)
    yield run
    if saved is not None:
        os.environ['ANSIBLE_VAULT_PASSWORD_FILE'] = saved


def recap(result):
    return {host: {k: v[host] for k, v in result.stats.items() if host in v}
            for host in set(h for v in result.stats.values() for h in v)}


def stack_state():
    client = docker.from_env()
    return {
        'secrets': sorted(s.name for s in client.secrets.list()),
        'configs': sorted(c.name for c in client.configs.list() if c.name.startswith(('nginx_conf', 'pretix_cfg'))),
        'api_tokens': psql('SELECT count(*) FROM pretixbase_teamapitoken WHERE active'),
    }


def test_nightly_site_twice_in_a_fresh_home_changes_nothing(awx):
    before = stack_state()
    for dummy in range(2):
        result, out, dummy_home = awx('boxoffice site')
        assert result.status == 'successful', out[-6000:]
        assert all(host.get('changed', 0) == 0 for host in recap(result).values()), out[-6000:]
    assert stack_state() == before
    print(json.dumps(before, indent=1))


@pytest.mark.parametrize('name, expected', [
    ('boxoffice scale', 'successful'),
    ('boxoffice heal', 'successful'),
    ('boxoffice backup full', 'successful'),
    ('boxoffice backup diff', 'successful'),
    ('boxoffice backup check', 'successful'),
    # The survey's default is no confirmation: refused, nothing changed.
    ('boxoffice restore', 'failed'),
    # No Prometheus URL in the inventory: refused, nothing changed.
    ('boxoffice autoscale', 'failed'),
])
def test_job_template(awx, name, expected):
    result, out, dummy_home = awx(name)
    assert result.status == expected, out[-6000:]
    if expected == 'failed':
        assert all(host.get('changed', 0) == 0 for host in recap(result).values())
    if name == 'boxoffice autoscale':
        assert 'autoscale_prometheus_url is empty' in out, out[-6000:]


def test_loadtest_writes_its_reports_outside_the_collection(awx):
    result, out, home = awx('boxoffice loadtest')
    # On a small machine the target rate may not hold; the run must still complete and report.
    assert result.status == 'successful' or 'DID NOT HOLD' in out, out[-6000:]
    assert list((home / 'boxoffice-reports').glob('*/summary.json'))


def test_no_vault_password_fails_before_any_change(awx):
    result, out, dummy_home = awx('boxoffice site', vault=False)
    assert result.status == 'failed'
    assert 'No vault password was given' in out and 'Vault credential' in out
    assert all(host.get('changed', 0) == 0 for host in recap(result).values())


def test_running_stack_with_an_empty_store_fails_and_creates_nothing(awx, tmp_path):
    before = stack_state()
    for extra in ({}, {'secrets_generate': True}):
        result, out, dummy_home = awx('boxoffice site', extra=extra, store=tmp_path / 'empty')
        assert result.status == 'failed'
        assert 'already runs Docker secrets' in out and 'secrets_dir' in out
    assert stack_state() == before
    assert not (tmp_path / 'empty').exists()


@pytest.mark.skipif(os.environ.get('BOXOFFICE_AWX_DESTRUCTIVE') != '1',
                    reason='stops the shop; set BOXOFFICE_AWX_DESTRUCTIVE=1')
def test_teardown_then_site_brings_the_shop_back(awx):
    before = stack_state()
    result, out, dummy_home = awx('boxoffice teardown')
    assert result.status == 'successful', out[-6000:]
    result, out, dummy_home = awx('boxoffice site')
    assert result.status == 'successful', out[-6000:]
    assert stack_state() == before
