"""playbooks/app.yml refuses bad input with a clear message before it changes anything.

Every run uses service/config names with a unique bxtest- prefix, so the check "nothing was
created" cannot be confused with the shared stack, and the real Docker engine is asked.
"""

import os
import re
import subprocess
import uuid

import pytest

from conftest import REPO_ROOT, vault_env

ANSIBLE_PLAYBOOK = os.path.join(REPO_ROOT, '.venv', 'bin', 'ansible-playbook')


def run_app(tmp_path, extra):
    prefix = 'bxtest-app-%s' % uuid.uuid4().hex[:8]
    extra_vars = {
        'pretix_image': 'boxoffice-test/none:never-pulled',
        'nginx_image': 'boxoffice-test/none:never-pulled',
        'pretix_service_prefix': prefix,
        'pretix_config_name': prefix + '_cfg',
        'nginx_service_name': prefix + '-nginx',
        'nginx_config_name': prefix + '_nginx',
        'nginx_tls_dir': str(tmp_path / 'tls'),
        'nfs_volume_name': prefix + '-data',
        'secrets_dir': str(tmp_path / 'secrets'),
    }
    extra_vars.update(extra)
    args = [ANSIBLE_PLAYBOOK if os.path.exists(ANSIBLE_PLAYBOOK) else 'ansible-playbook',
            'playbooks/app.yml']
    for key, value in extra_vars.items():
        args += ['-e', '%s=%s' % (key, value)]
    proc = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env=vault_env(tmp_path))
    return prefix, proc


def docker_names(kind, prefix):
    out = subprocess.run(['docker', kind, 'ls', '--format', '{{.Name}}'], check=True,
                         capture_output=True, text=True).stdout.split()
    return [n for n in out if n.startswith(prefix)]


@pytest.mark.parametrize('extra, message', [
    ({'pretix_url': 'ftp://shop.example.org'}, 'pretix_url must be'),
    ({'pretix_url': 'https://shop.example.org/'}, 'without a trailing slash'),
    ({'pretix_url': 'shop.example.org'}, 'pretix_url must be'),
    ({'pretix_web_replicas': '0'}, 'pretix_web_replicas must be a whole number of at least 1'),
    ({'pretix_worker_max_memory_per_child': '2G'}, 'below the worker\'s memory limit'),
    ({'pretix_worker_max_memory_per_child': 'lots'}, 'pretix_worker_max_memory_per_child must be a size'),
    ({'nginx_tls_cert_file': '/nonexistent/cert.pem', 'nginx_tls_key_file': '/nonexistent/key.pem'},
     'TLS file /nonexistent/cert.pem does not exist'),
    ({'nginx_tls_cert_file': '/etc/hostname'}, 'Give the certificate and its key together'),
], ids=['url-scheme', 'url-trailing-slash', 'url-no-scheme', 'zero-web-replicas',
        'worker-memory-above-limit', 'worker-memory-not-a-size', 'missing-certificate',
        'cert-without-key'])
def test_bad_input_fails_before_any_change(tmp_path, extra, message):
    prefix, proc = run_app(tmp_path, extra)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert message in re.sub(r'\s+', ' ', output), output[-3000:]
    recap = re.search(r'changed=(\d+)', output)
    assert recap and recap.group(1) == '0', output[-3000:]
    for kind in ('service', 'config', 'secret', 'volume'):
        assert docker_names(kind, prefix) == [], '%s created despite the error' % kind
    # Nothing was generated on the controller either.
    assert not (tmp_path / 'tls').exists()
    assert not (tmp_path / 'secrets').exists()
