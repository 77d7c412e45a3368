"""Bad TLS input is refused before anything changes (issue 18): a certificate that does not match its
key, one that is not valid now, and one whose names do not cover pretix_url's host.

Each bad certificate is made here with `cryptography` and given to `site.yml` as controller files
(local inventory, like an operator's run). The run must fail in its first play - the check phase of
playbooks/secrets.yml, before the swarm, images and data plays - with the message of
roles/nginx/tasks/tls_check.yml, and leave every service spec, Swarm config and Docker secret as it
was. Good certificates (a chain, a wildcard given as PEM text, the stack's own self-signed pair) pass
that same check phase, `playbooks/secrets.yml`, which changes nothing; no deploy is needed.

Runs against the stack that site.yml deployed on this machine (inventories/local), like
test_perimeter.py: the check phase reads the stack's secret store with the controller's vault
password (BOXOFFICE_VAULT_PASSWORD, else $ANSIBLE_VAULT_PASSWORD_FILE, else
~/.config/boxoffice/vault-password).
"""

import datetime
import os
import re
import time

import pytest
import yaml
from conftest import REPO_ROOT, cert_pem, key_pem, new_key, run_playbook

VAULT_PASSWORD_FILE = os.path.expanduser(os.environ.get(
    'BOXOFFICE_VAULT_PASSWORD', os.environ.get('ANSIBLE_VAULT_PASSWORD_FILE', '~/.config/boxoffice/vault-password')))
NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
# The local inventory's names: pretix_url https://localhost, nginx_server_name localhost.
SHOP = 'localhost'


def write(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def playbook(playbook_path, extra_args=()):
    """Run a playbook on the local inventory; (exit code, normalised output, seconds)."""
    started = time.monotonic()
    rc, output = run_playbook(playbook_path, '--vault-password-file', VAULT_PASSWORD_FILE, *extra_args,
                              timeout=300)
    # The YAML callback folds long messages and doubles quotes; compare words.
    return rc, re.sub(r'\s+', ' ', output), time.monotonic() - started


def files_state(directory):
    """Every file under a directory with its size and modification time."""
    return sorted((os.path.join(root, name), os.stat(os.path.join(root, name)).st_size,
                   os.stat(os.path.join(root, name)).st_mtime_ns)
                  for root, _, names in os.walk(directory) for name in names)


def swarm_state(client):
    """What a deploy changes: every service's spec version, every Swarm config and Docker secret,
    the local secret store and self-signed pair, and nginx's files on this (edge) node."""
    with open(os.path.join(REPO_ROOT, 'roles', 'nginx', 'defaults', 'main.yml')) as handle:
        nginx_config_dir = yaml.safe_load(handle).get('nginx_config_dir')
    return {
        'services': {s['Spec']['Name']: s['Version']['Index'] for s in client.api.services()
                     if not s['Spec']['Name'].startswith('bxtest-')},
        'configs': sorted((c['Spec']['Name'], c['ID']) for c in client.api.configs()),
        'secrets': sorted((s['Spec']['Name'], s['ID']) for s in client.api.secrets()),
        'files': [files_state(os.path.expanduser(d)) for d in
                  ('~/.config/boxoffice/secrets/local', '~/.config/boxoffice/tls/local', nginx_config_dir or '/nonexistent')],
    }


@pytest.fixture(scope='module')
def deployed(docker_client):
    if not any(s['Spec']['Name'] == 'nginx' for s in docker_client.api.services()):
        pytest.fail('The stack is not deployed here: run `ansible-playbook site.yml` first.')
    if not os.path.exists(VAULT_PASSWORD_FILE):
        pytest.fail('No vault password file %s: set BOXOFFICE_VAULT_PASSWORD.' % VAULT_PASSWORD_FILE)
    return docker_client


def bad_mismatched_key(tmp_path):
    return cert_pem(new_key(), [SHOP]), key_pem(new_key())


def bad_expired(tmp_path):
    key = new_key()
    return cert_pem(key, [SHOP], NOW - 90 * DAY, NOW - DAY), key_pem(key)


def bad_not_yet_valid(tmp_path):
    key = new_key()
    return cert_pem(key, [SHOP], NOW + DAY, NOW + 90 * DAY), key_pem(key)


def bad_wrong_name(tmp_path):
    key = new_key()
    return cert_pem(key, ['shop.example.org', '*.example.org']), key_pem(key)


@pytest.mark.parametrize('make, message', [
    (bad_mismatched_key, 'does not match the key nginx_tls_key_file {key}: the public key in the '
                         'certificate is another one'),
    (bad_expired, 'nginx_tls_cert_file {cert} has expired'),
    (bad_not_yet_valid, 'nginx_tls_cert_file {cert} is not valid yet'),
    (bad_wrong_name, 'nginx_tls_cert_file {cert} is not for localhost (the host of pretix_url '
                     'https://localhost and nginx_server_name localhost must both be among its '
                     'subjectAltName names'),
], ids=['mismatched-key', 'expired', 'not-yet-valid', 'wrong-name'])
def test_bad_certificate_is_refused_before_any_change(deployed, tmp_path, make, message):
    cert, key = make(tmp_path)
    cert_file = write(tmp_path / 'fullchain.pem', cert)
    key_file = write(tmp_path / 'privkey.pem', key)
    before = swarm_state(deployed)

    rc, output, seconds = playbook('site.yml', ['-e', 'nginx_tls_cert_file=' + cert_file,
                                                  '-e', 'nginx_tls_key_file=' + key_file])
    print('site.yml failed after %.1f s' % seconds)

    assert rc != 0, output[-3000:]
    assert message.format(cert=cert_file, key=key_file) in output, output[-3000:]
    assert 'Nothing has been changed.' in output
    # Refused in the check phase: no play after playbooks/secrets.yml started, nothing changed.
    assert 'PLAY [Check the stack\'s secrets]' in output
    assert 'PLAY [' not in output.split('PLAY [Check the stack\'s secrets]', 1)[1], output[-3000:]
    assert re.search(r'changed=0 ', output), output[-3000:]
    assert swarm_state(deployed) == before


def good_chain(tmp_path):
    """The server certificate, then the intermediate that signed it, as files."""
    ca_key, key = new_key(), new_key()
    chain = cert_pem(key, [SHOP], issuer_key=ca_key) + cert_pem(ca_key, ['bxtest intermediate'])
    return ['-e', 'nginx_tls_cert_file=' + write(tmp_path / 'fullchain.pem', chain),
            '-e', 'nginx_tls_key_file=' + write(tmp_path / 'privkey.pem', key_pem(key))]


def good_wildcard_text(tmp_path):
    """*.example.org for shop.example.org, given as PEM text (an AWX credential's way)."""
    key = new_key()
    variables = {'nginx_tls_cert': cert_pem(key, ['*.example.org']), 'nginx_tls_key': key_pem(key),
                 'pretix_url': 'https://shop.example.org', 'nginx_server_name': 'shop.example.org'}
    return ['-e', '@' + write(tmp_path / 'tls.yml', yaml.safe_dump(variables))]


def good_self_signed(tmp_path):
    """The stack's own pair in nginx_tls_dir (SAN nginx_server_name and 127.0.0.1)."""
    return []


@pytest.mark.parametrize('make', [good_chain, good_wildcard_text, good_self_signed],
                         ids=['chain-as-files', 'wildcard-as-text', 'self-signed'])
def test_good_certificate_passes_the_check_phase(deployed, tmp_path, make):
    before = swarm_state(deployed)
    rc, output, seconds = playbook('playbooks/secrets.yml', make(tmp_path))
    print('playbooks/secrets.yml passed after %.1f s' % seconds)
    assert rc == 0, output[-3000:]
    assert 'TASK [boxoffice.pretix.nginx : Fail when the certificate is not for the shop\'s names]' in output
    assert re.search(r'changed=0 ', output) and 'failed=0' in output, output[-3000:]
    assert swarm_state(deployed) == before
