"""The secret store (boxoffice.pretix.secret_store, playbooks/secrets.yml) as a fresh AWX job sees
it: an empty HOME, an inventory of its own, the vault password given or not. No Docker engine is
touched: `docker` on PATH is a stand-in that prints the swarm's secrets from a file.
"""

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

BIN = os.path.dirname(sys.executable)
NAMES = ['pg_superuser_password', 'pg_repmgr_password', 'pg_pretix_password', 'pg_pgpool_password',
         'redis_password', 'redis_proxy_stats_password', 'pretix_django_secret',
         'pretix_metrics_passphrase', 'pretix_admin_password', 'pretix_api_token',
         'monitoring_ui_password']
FAKE_DOCKER = '''#!/bin/sh
# docker secret ls --format '{{json .}}' of a swarm described by $FAKE_SWARM (absent: no engine).
[ -f "$FAKE_SWARM" ] || { echo "Cannot connect to the Docker daemon" >&2; exit 1; }
cat "$FAKE_SWARM"
'''


@pytest.fixture
def job(tmp_path):
    """Run playbooks/secrets.yml like an AWX job: fresh HOME, inventory in tmp_path/inventory."""
    home = tmp_path / 'home'
    home.mkdir()
    fake_bin = tmp_path / 'bin'
    fake_bin.mkdir()
    (fake_bin / 'docker').write_text(FAKE_DOCKER)
    (fake_bin / 'docker').chmod(0o755)
    inventory = tmp_path / 'inventory'
    inventory.mkdir()
    (inventory / 'hosts.yml').write_text(json.dumps({'all': {'children': {'swarm_managers': {'hosts': {
        'mgr': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}}}}}}))
    password = tmp_path / 'vault-password'
    password.write_text('the-vault-password\n')

    def run(*extra, vault=True, playbook='playbooks/secrets.yml'):
        env = dict(os.environ, HOME=str(home), ANSIBLE_NOCOLOR='1', FAKE_SWARM=str(tmp_path / 'swarm'),
                   PATH='%s:%s:%s' % (fake_bin, BIN, os.environ['PATH']))
        env.pop('ANSIBLE_VAULT_PASSWORD_FILE', None)
        cmd = [os.path.join(BIN, 'ansible-playbook'), '-i', str(inventory / 'hosts.yml'), playbook, '-v']
        if vault:
            cmd += ['--vault-password-file', str(password)]
        proc = subprocess.run(cmd + list(extra), cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    run.inventory = inventory
    run.swarm = tmp_path / 'swarm'
    run.password = password
    return run


def recap_changed(output):
    return int(output.split('changed=')[-1].split()[0])


def vault_view(path, password):
    """The decrypted value (ansible-vault view ends its output with a newline)."""
    return subprocess.run([os.path.join(BIN, 'ansible-vault'), 'view', '--vault-password-file',
                           str(password), str(path)], capture_output=True, text=True, check=True).stdout[:-1]


def write_swarm(job, secrets):
    """secrets: Docker secret name -> value it was made from (community.docker's ansible_key label)."""
    job.swarm.write_text(''.join(json.dumps({
        'Name': name, 'Labels': 'ansible_key=%s' % hashlib.sha224(value.encode()).hexdigest()}) + '\n'
        for name, value in secrets.items()))


def test_first_deploy_creates_only_when_asked_then_changes_nothing(job):
    rc, out = job()
    assert rc != 0
    assert 'not found in %s/secrets' % job.inventory in out and 'secrets_generate=true' in out
    assert not (job.inventory / 'secrets').exists()

    rc, out = job('-e', 'secrets_generate=true')
    assert rc == 0, out[-3000:]
    values = {}
    for name in NAMES:
        path = job.inventory / 'secrets' / ('%s.vault' % name)
        assert path.read_text().startswith('$ANSIBLE_VAULT;1.1;AES256')
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        values[name] = vault_view(path, job.password)
        assert len(values[name]) == 32 and values[name].isalnum()
    key = job.inventory / 'tls' / 'key.pem'
    assert key.read_text().startswith('$ANSIBLE_VAULT')
    assert 'PRIVATE KEY' in vault_view(key, job.password)
    assert (job.inventory / 'tls' / 'cert.pem').read_text().startswith('-----BEGIN CERTIFICATE-----')
    assert not any(value in out for value in values.values())

    for extra in (('-e', 'secrets_generate=true'), ()):
        rc, out = job(*extra)
        assert rc == 0 and recap_changed(out) == 0, out[-3000:]
    assert {n: vault_view(job.inventory / 'secrets' / ('%s.vault' % n), job.password) for n in NAMES} == values


def test_no_vault_password_fails_and_says_what_to_give(job):
    assert job('-e', 'secrets_generate=true')[0] == 0
    rc, out = job(vault=False)
    assert rc != 0
    assert 'No vault password was given' in out and 'ANSIBLE_VAULT_PASSWORD_FILE' in out
    assert 'Vault credential' in out


def test_wrong_vault_password_fails(job):
    assert job('-e', 'secrets_generate=true')[0] == 0
    job.password.write_text('another-password\n')
    rc, out = job()
    assert rc != 0 and 'Cannot read' in out and 'pg_superuser_password.vault' in out


def test_running_stack_without_its_store_fails_and_creates_nothing(job):
    """What an AWX job with an empty store finds on a deployed stack: never a _v2 secret."""
    write_swarm(job, {'boxoffice_%s_v1' % name: 'deployed' for name in NAMES})
    for extra in ((), ('-e', 'secrets_generate=true')):
        rc, out = job(*extra)
        assert rc != 0
        assert 'already runs Docker secrets' in out and 'boxoffice_pg_superuser_password_v1' in out
        assert 'secrets_dir' in out
    assert not (job.inventory / 'secrets').exists()


def test_values_that_differ_from_the_running_secrets_need_secrets_rotate(job):
    assert job('-e', 'secrets_generate=true')[0] == 0
    values = {n: vault_view(job.inventory / 'secrets' / ('%s.vault' % n), job.password) for n in NAMES}
    key = vault_view(job.inventory / 'tls' / 'key.pem', job.password).strip()
    deployed = {'boxoffice_%s_v2' % n: v for n, v in values.items()}
    deployed['nginx_conf_key_v1'] = key
    write_swarm(job, deployed)
    rc, out = job()
    assert rc == 0 and recap_changed(out) == 0, out[-3000:]

    deployed['boxoffice_redis_password_v3'] = 'rotated elsewhere'
    write_swarm(job, deployed)
    rc, out = job()
    assert rc != 0 and 'differ from the Docker secrets' in out and 'boxoffice_redis_password_v3' in out
    assert 'secrets_rotate=true' in out
    assert job('-e', 'secrets_rotate=true')[0] == 0


def test_tls_key_missing_while_nginx_runs_fails(job):
    assert job('-e', 'secrets_generate=true')[0] == 0
    (job.inventory / 'tls' / 'key.pem').unlink()
    write_swarm(job, {'nginx_conf_key_v1': 'deployed'})
    rc, out = job('-e', 'secrets_generate=true')
    assert rc != 0 and 'nginx_conf_key_v1' in out and 'already runs Docker secrets' in out
    assert not (job.inventory / 'tls' / 'key.pem').exists()
