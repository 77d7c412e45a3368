"""The secrets role against the real Swarm: generation only when asked, vault storage, Docker
secrets, rotation only when asked, no value in the output, clear error for an unreadable value."""

import os
import subprocess
import sys
import uuid

import pytest

from conftest import REPO_ROOT, TEST_PREFIX, vault_env

BIN = os.path.dirname(sys.executable)
PLAY = '''
- name: Secrets role under test
  hosts: swarm_managers
  gather_facts: false
  roles:
    - role: boxoffice.pretix.secrets
  post_tasks:
    - name: Show the interface fact
      ansible.builtin.debug:
        var: secrets_docker
'''


@pytest.fixture
def secrets_env(tmp_path, docker_client):
    prefix = (TEST_PREFIX + 'sec' + uuid.uuid4().hex[:6] + '_').replace('-', '_')
    play = tmp_path / 'play.yml'
    play.write_text(PLAY)

    def run(*extra, names=('alpha', 'beta')):
        cmd = [os.path.join(BIN, 'ansible-playbook'), str(play), '-v',
               '-e', '{"secrets_names": %s}' % list(names).__repr__().replace("'", '"'),
               '-e', 'secrets_dir=%s' % (tmp_path / 'secrets'),
               '-e', 'secrets_docker_prefix=%s' % prefix] + list(extra)
        return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                              env=vault_env(tmp_path))
    yield run, tmp_path, prefix
    for secret in docker_client.secrets.list():
        if secret.name.startswith(prefix):
            secret.remove()


def vault(tmp_path, *args, stdin=None):
    # The test's own password through the environment, which replaces the caller's (scripts/test.sh
    # exports one): a second password file would make two default vault-ids.
    return subprocess.run([os.path.join(BIN, 'ansible-vault')] + list(args),
                          input=stdin, capture_output=True, text=True, env=vault_env(tmp_path))


def changed(output):
    return int([l for l in output.splitlines() if 'changed=' in l][-1].split('changed=')[1].split()[0])


def test_generate_publish_idempotent_and_never_logged(secrets_env, docker_client):
    run, tmp_path, prefix = secrets_env
    missing = run()
    assert missing.returncode != 0 and 'secrets_generate=true' in missing.stdout
    assert not [s for s in docker_client.secrets.list() if s.name.startswith(prefix)]
    first = run('-e', 'secrets_generate=true')
    assert first.returncode == 0, first.stdout[-3000:]
    values = {}
    for name in ('alpha', 'beta'):
        text = (tmp_path / 'secrets' / ('%s.vault' % name)).read_text()
        assert text.startswith('$ANSIBLE_VAULT;')
        assert oct((tmp_path / 'secrets' / ('%s.vault' % name)).stat().st_mode & 0o777) == '0o600'
        values[name] = vault(tmp_path, 'decrypt', '--output', '-',
                             str(tmp_path / 'secrets' / ('%s.vault' % name))).stdout
        assert len(values[name]) == 32 and values[name].isalnum()
        assert values[name] not in first.stdout + first.stderr
    assert values['alpha'] != values['beta']
    names = sorted(s.name for s in docker_client.secrets.list() if s.name.startswith(prefix))
    assert names == [prefix + 'alpha_v1', prefix + 'beta_v1']
    assert prefix + 'alpha_v1' in first.stdout  # the secrets_docker fact
    second = run()
    assert second.returncode == 0 and changed(second.stdout) == 0, second.stdout[-3000:]


def test_rotated_value_gets_a_new_secret_version(secrets_env, docker_client):
    run, tmp_path, prefix = secrets_env
    assert run('-e', 'secrets_generate=true', names=('alpha',)).returncode == 0
    path = tmp_path / 'secrets' / 'alpha.vault'
    path.unlink()
    assert vault(tmp_path, 'encrypt', '--output', str(path), stdin='rotated-value-0123456789').returncode == 0
    refused = run(names=('alpha',))
    assert refused.returncode != 0 and 'secrets_rotate=true' in refused.stdout
    rotated = run('-e', 'secrets_rotate=true', names=('alpha',))
    assert rotated.returncode == 0, rotated.stdout[-3000:]
    names = sorted(s.name for s in docker_client.secrets.list() if s.name.startswith(prefix))
    assert names == [prefix + 'alpha_v1', prefix + 'alpha_v2']
    assert 'rotated-value-0123456789' not in rotated.stdout + rotated.stderr


def test_unreadable_secret_is_a_clear_error_before_publishing(secrets_env, docker_client):
    run, tmp_path, prefix = secrets_env
    (tmp_path / 'secrets').mkdir()
    (tmp_path / 'secrets' / 'alpha.vault').write_text('$ANSIBLE_VAULT;1.1;AES256\nnot-really-encrypted\n')
    result = run(names=('alpha',))
    assert result.returncode != 0
    assert 'Cannot read %s' % (tmp_path / 'secrets' / 'alpha.vault') in result.stdout
    assert not [s for s in docker_client.secrets.list() if s.name.startswith(prefix)]
