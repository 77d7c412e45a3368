"""Every job template of awx/vars.yml run as AWX runs it: through ansible-runner, inside the
execution environment image (playbooks/execution_environment.yml builds it), from the collection
installed from its tarball, with the template's extra vars and survey defaults, and the Vault
credential injected as AWX does (--ask-vault-pass, answered by the runner). Against the deployed
local stack, so marked slow and left out of CI; ansible-runner must be installed (requirements.txt).

In the EE, each job's home is the container's own, gone when the job ends. The job reaches the
machine it runs on as AWX reaches a node, but through the community.docker.nsenter connection
(the EE container runs as root in the host's PID namespace, with the capabilities nsenter needs) instead of SSH, which this machine
does not run. The inventory is a copy of inventories/local with a copy of its secret store beside
it, as in a project AWX syncs. Without the EE image, jobs run on this machine with an
empty HOME instead. Teardown stops the shop, so it runs only with BOXOFFICE_AWX_DESTRUCTIVE=1 and
is followed by a site run.
  BOXOFFICE_VAULT_PASSWORD   vault password file of the store (default ~/.config/boxoffice/vault-password)
  BOXOFFICE_AWX_EE           the EE image (default boxoffice/pretix-ee:0.1.0); "none": no container
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
EE_IMAGE = os.environ.get('BOXOFFICE_AWX_EE', 'boxoffice/pretix-ee:0.1.0')
EE_COLLECTIONS = '/usr/share/boxoffice/collections'
# The machine's name in the job inventory when jobs run in the EE, where localhost is the EE.
EE_NODE_NAME = 'shop-node'
with open(os.path.join(REPO_ROOT, 'awx', 'vars.yml'), encoding='utf-8') as _handle:
    TEMPLATES = {t['name']: t for t in yaml.safe_load(_handle)['awx_job_templates']}


def ee_image():
    """The EE image when this machine has it, else None (jobs run on this machine)."""
    if EE_IMAGE == 'none':
        return None
    try:
        docker.from_env().images.get(EE_IMAGE)
    except docker.errors.ImageNotFound:
        return None
    return EE_IMAGE


def job_inventory(job, inside, in_container):
    """inventories/local and a copy of its secret store beside it, as a project AWX syncs holds
    them (the store outside the inventory directory, which Ansible would parse as sources)."""
    inventory = job / 'inventory'
    shutil.copytree(os.path.join(REPO_ROOT, 'inventories', 'local'), inventory)
    shutil.copytree(os.path.join(REAL_HOME, '.config/boxoffice/secrets/local'), job / 'store' / 'secrets')
    shutil.copytree(os.path.join(REAL_HOME, '.config/boxoffice/tls/local'), job / 'store' / 'tls')
    (inventory / 'group_vars' / 'all' / 'secrets.yml').write_text(yaml.safe_dump({
        'secrets_dir': inside(job / 'store' / 'secrets'), 'nginx_tls_dir': inside(job / 'store' / 'tls')}))
    if in_container:
        # Named as a node, not localhost: delegate_to: localhost must reach the EE, the
        # controller, as in AWX.
        hosts = yaml.safe_load((inventory / 'hosts.yml').read_text())
        managers = hosts['all']['children']['swarm_managers']['hosts']
        del managers['localhost']
        managers[EE_NODE_NAME] = {
            'ansible_connection': 'community.docker.nsenter',
            # This test's own process: its namespaces are the host's (PID 1 may refuse nsenter).
            'ansible_nsenter_pid': os.getpid(),
            # The node's own interpreter, with the Docker SDK the docker_engine role installed.
            'ansible_python_interpreter': sys.executable}
        (inventory / 'hosts.yml').write_text(yaml.safe_dump(hosts))
        swarm = inventory / 'group_vars' / 'all' / 'swarm.yml'
        placement = yaml.safe_load(swarm.read_text())
        placement['swarm_placement'] = {key: EE_NODE_NAME for key in placement['swarm_placement']}
        swarm.write_text(yaml.safe_dump(placement))
    return inventory


@pytest.fixture(scope='module')
def awx(tmp_path_factory):
    """Run a job template by name; returns (runner result, stdout text, job directory)."""
    image = ee_image()
    work = tmp_path_factory.mktemp('awx')
    dummy, collections = install_collection(work)
    with open(VAULT_PASSWORD_FILE, encoding='utf-8') as handle:
        vault_password = handle.read().strip()

    def run(name, extra=None, vault=True, store=None):
        template = TEMPLATES[name]
        job = tmp_path_factory.mktemp('job')
        inside = (lambda path: '/runner/' + os.path.relpath(path, job)) if image else str
        inventory = job_inventory(job, inside, bool(image))
        extravars = dict(template.get('extra_vars') or {})
        for question in template.get('survey', {}).get('spec', []):
            if 'default' in question and question['default'] != '':
                extravars[question['variable']] = question['default']
        extravars['loadtest_reports_dir'] = inside(job / 'reports')
        extravars.update(extra or {})
        if store is not None:
            extravars.update(secrets_dir=inside(job / store), nginx_tls_dir=inside(job / store))
        playbook = 'boxoffice.pretix.' + os.path.basename(template['playbook'])[:-4]
        envvars = {'ANSIBLE_NOCOLOR': '1'}
        isolation = {}
        if image:
            envvars['ANSIBLE_COLLECTIONS_PATH'] = EE_COLLECTIONS + ':/usr/share/ansible/collections'
            isolation = dict(
                process_isolation=True, process_isolation_executable='docker', container_image=image,
                container_volume_mounts=[collections + ':' + EE_COLLECTIONS + ':ro'],
                # What nsenter needs to enter the host's namespaces as root; --privileged, which
                # the connection's docs suggest, is refused by this machine's engine.
                container_options=['--user=0', '--pid=host', '--network=host',
                                   '--cap-add=SYS_ADMIN', '--cap-add=SYS_PTRACE'])
        else:
            envvars.update(HOME=str(tmp_path_factory.mktemp('home')), ANSIBLE_COLLECTIONS_PATH=collections)
        result = ansible_runner.run(
            private_data_dir=str(job), playbook=playbook,
            inventory=str(inventory), extravars=extravars,
            cmdline='--ask-vault-pass' if vault else None,
            passwords={r'Vault password:\s*?$': vault_password} if vault else {},
            envvars=envvars, timeout=template.get('timeout', 3600), quiet=True, **isolation)
        return result, result.stdout.read(), job

    # Only the credential gives the password, as in AWX.
    saved = os.environ.pop('ANSIBLE_VAULT_PASSWORD_FILE', None)
    yield run
    if saved is not None:
        os.environ['ANSIBLE_VAULT_PASSWORD_FILE'] = saved


def changed_tasks(out):
    """The TASK lines whose result was changed, to say what a run that should change nothing did."""
    task, found = None, []
    for line in out.splitlines():
        if line.startswith('TASK ['):
            task = line.rstrip('* ')
        elif line.startswith('changed:') and task not in found:
            found.append(task)
    return found


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


def node_host_label():
    client = docker.from_env()
    return client.nodes.get(client.info()['Swarm']['NodeID']).attrs['Spec']['Labels'].get('boxoffice.host')


def test_nightly_site_twice_in_a_fresh_home_changes_nothing(awx):
    # The node's boxoffice.host label names it as the inventory that deployed it does. A stack
    # last deployed through inventories/local (localhost) is adopted by the job inventory once,
    # and that run relabels the node and changes nothing else.
    job_host = EE_NODE_NAME if ee_image() else 'localhost'
    if node_host_label() != job_host:
        result, out, dummy_job = awx('boxoffice site')
        assert result.status == 'successful', out[-6000:]
        assert changed_tasks(out) == ['TASK [boxoffice.pretix.swarm : Label each node with the stack members it hosts]'], \
            changed_tasks(out)
        print('ADOPTED the node as %s: %s' % (job_host, recap(result)))
    before = stack_state()
    for dummy in range(2):
        result, out, dummy_job = awx('boxoffice site')
        assert result.status == 'successful', out[-6000:]
        assert all(host.get('changed', 0) == 0 for host in recap(result).values()), changed_tasks(out)
    after = stack_state()
    print('STACK BEFORE %s\nSTACK AFTER  %s' % (json.dumps(before), json.dumps(after)))
    assert after == before


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
    result, out, dummy_job = awx(name)
    assert result.status == expected, out[-6000:]
    if expected == 'failed':
        assert all(host.get('changed', 0) == 0 for host in recap(result).values())
    if name == 'boxoffice autoscale':
        assert 'autoscale_prometheus_url is empty' in out, out[-6000:]


def test_loadtest_writes_its_reports_where_the_operator_says(awx):
    result, out, job = awx('boxoffice loadtest')
    # On a small machine the target rate may not hold; the run must still complete and report.
    assert result.status == 'successful' or 'DID NOT HOLD' in out, out[-6000:]
    assert list((job / 'reports').glob('*/summary.json'))


def test_no_vault_password_fails_before_any_change(awx):
    result, out, dummy_job = awx('boxoffice site', vault=False)
    assert result.status == 'failed'
    assert 'No vault password was given' in out and 'Vault credential' in out
    assert all(host.get('changed', 0) == 0 for host in recap(result).values())


def test_running_stack_with_an_empty_store_fails_and_creates_nothing(awx):
    before = stack_state()
    for extra in ({}, {'secrets_generate': True}):
        result, out, job = awx('boxoffice site', extra=extra, store='empty')
        assert result.status == 'failed'
        assert 'already runs Docker secrets' in out and 'secrets_dir' in out
        assert not (job / 'empty').exists()
    assert stack_state() == before


@pytest.mark.skipif(os.environ.get('BOXOFFICE_AWX_DESTRUCTIVE') != '1',
                    reason='stops the shop; set BOXOFFICE_AWX_DESTRUCTIVE=1')
def test_teardown_then_site_brings_the_shop_back(awx):
    before = stack_state()
    result, out, dummy_job = awx('boxoffice teardown')
    assert result.status == 'successful', out[-6000:]
    result, out, dummy_job = awx('boxoffice site')
    assert result.status == 'successful', out[-6000:]
    assert stack_state() == before
