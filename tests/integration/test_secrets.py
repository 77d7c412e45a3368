"""The secrets role against the real Swarm: generation, vault storage, Docker secrets, rotation,
no value in the output, clear error for an unreadable value."""

import os
import subprocess
import sys
import uuid

import pytest

from conftest import REPO_ROOT, TEST_PREFIX

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
               '-e', 'secrets_vault_password_file=%s' % (tmp_path / 'vault' / 'pw'),
               '-e', 'secrets_docker_prefix=%s' % prefix] + list(extra)
        return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, ANSIBLE_NOCOLOR='1'))
    yield run, tmp_path, prefix
    for secret in docker_client.secrets.list():
        if secret.name.startswith(prefix):
            secret.remove()


def vault(tmp_path, *args, stdin=None):
    return subprocess.run([os.path.join(BIN, 'ansible-vault')] + list(args) +
                          ['--vault-password-file', str(tmp_path / 'vault' / 'pw')],
                          input=stdin, capture_output=True, text=True)


def changed(output):
    return int([l for l in output.splitlines() if 'changed=' in l][-1].split('changed=')[1].split()[0])


def test_generate_publish_idempotent_and_never_logged(secrets_env, docker_client):
    run, tmp_path, prefix = secrets_env
    first = run()
    assert first.returncode == 0, first.stdout[-3000:]
    assert oct((tmp_path / 'vault' / 'pw').stat().st_mode & 0o777) == '0o600'
    values = {}
    for name in ('alpha', 'beta'):
        text = (tmp_path / 'secrets' / ('%s.vault' % name)).read_text()
        assert text.startswith('$ANSIBLE_VAULT;')
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
    assert run(names=('alpha',)).returncode == 0
    path = tmp_path / 'secrets' / 'alpha.vault'
    path.unlink()
    assert vault(tmp_path, 'encrypt', '--output', str(path), stdin='rotated-value-0123456789').returncode == 0
    rotated = run(names=('alpha',))
    assert rotated.returncode == 0, rotated.stdout[-3000:]
    names = sorted(s.name for s in docker_client.secrets.list() if s.name.startswith(prefix))
    assert names == [prefix + 'alpha_v1', prefix + 'alpha_v2']
    assert 'rotated-value-0123456789' not in rotated.stdout + rotated.stderr


def test_unreadable_secret_is_a_clear_error_before_publishing(secrets_env, docker_client):
    run, tmp_path, prefix = secrets_env
    (tmp_path / 'vault').mkdir()
    (tmp_path / 'vault' / 'pw').write_text('the-right-password\n')
    (tmp_path / 'vault' / 'pw').chmod(0o600)
    (tmp_path / 'secrets').mkdir()
    (tmp_path / 'secrets' / 'alpha.vault').write_text('$ANSIBLE_VAULT;1.1;AES256\nnot-really-encrypted\n')
    result = run(names=('alpha',))
    assert result.returncode != 0
    assert "Secrets ['alpha'] could not be read" in result.stdout
    assert not [s for s in docker_client.secrets.list() if s.name.startswith(prefix)]
