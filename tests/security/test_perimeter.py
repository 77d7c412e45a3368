"""The perimeter of the deployed stack, one test per rule (issue 18), each checked from outside
the way an attacker or a security review would see it: the shop's TLS and headers, the initial
admin login, the services' capabilities and environments, and the order in which a new shop is
published.

Runs against the stack that site.yml deployed on this machine (inventories/local), like tests/e2e,
whose settings and helpers it shares (BOXOFFICE_E2E_URL, BOXOFFICE_SECRETS_DIR, ...).
"""

import os
import socket
import ssl
import sys
import urllib.parse

import pytest
import yaml

from conftest import REPO_ROOT, registry_digest

# The e2e module holds the shop's URL, its certificate and the vault reader.
sys.path.insert(0, os.path.join(REPO_ROOT, 'tests', 'e2e'))
from test_buy_ticket import BASE_URL, EVENT_PATH, find_form, parse_forms, read_vault, session  # noqa: E402,F401

SHOP = urllib.parse.urlsplit(BASE_URL)
SHOP_HOST = SHOP.hostname
SHOP_PORT = SHOP.port or 443


def role_file(role, path):
    with open(os.path.join(REPO_ROOT, 'roles', role, path)) as handle:
        return yaml.safe_load(handle)


NGINX_DEFAULTS = role_file('nginx', 'defaults/main.yml')

MONITORING_CAP_ADD = role_file('monitoring', 'vars/main.yml')['monitoring_cap_add']
# What each kind of service adds back after dropping every capability (the roles' vars/main.yml),
# by its boxoffice.component label (the registry's is boxoffice.role=images).
CAP_ADD = {
    'images': [],
    'pretix': [],
    'nginx': role_file('nginx', 'vars/main.yml')['nginx_cap_add'],
    'redis-proxy': role_file('redis_proxy', 'vars/main.yml')['redis_proxy_cap_add'],
    'autoscaler': role_file('autoscale', 'vars/main.yml')['autoscale_service_cap_add'],
    'postgres': role_file('postgres_repmgr', 'vars/main.yml')['postgres_repmgr_cap_add'],
    'pgpool': role_file('pgpool', 'vars/main.yml')['pgpool_cap_add'],
    'redis': role_file('redis_sentinel', 'vars/main.yml')['redis_sentinel_cap_add'],
    'redis-sentinel': role_file('redis_sentinel', 'vars/main.yml')['redis_sentinel_cap_add'],
}
# Kinds that keep Docker's default set, each with its reason in docs/security.md.
CAP_EXCEPTIONS = {'nfs'}
# Kinds whose image exists only on the node that runs it and is never pulled: the registry (it
# runs before there is a registry to pull from) and nfs-ganesha (built on the NFS node).
LOCAL_IMAGE_KINDS = {'images', 'nfs'}


def service_kind(service):
    labels = service['Spec'].get('Labels') or {}
    if labels.get('boxoffice.tier') == 'monitoring':
        return 'monitoring'
    return labels.get('boxoffice.component') or labels.get('boxoffice.role')


@pytest.fixture(scope='module')
def stack_services(docker_client):
    services = [s for s in docker_client.api.services() if not s['Spec']['Name'].startswith('bxtest-')]
    if not any(s['Spec']['Name'] == 'nginx' for s in services):
        pytest.fail('The stack is not deployed here: run `ansible-playbook site.yml` first.')
    return services


def test_the_shop_is_published_only_after_the_bootstrap():
    """pretix's first migration creates admin@localhost with the password `admin`. nginx, the only
    published way in, must come after the bootstrap that replaces it, so that the login is never
    reachable, and a failed bootstrap leaves a new shop unpublished."""
    with open(os.path.join(REPO_ROOT, 'playbooks', 'app.yml')) as handle:
        [play] = yaml.safe_load(handle)
    roles = [r['role'] if isinstance(r, dict) else r for r in play['roles']]
    assert roles.index('boxoffice.pretix.pretix_bootstrap') < roles.index('boxoffice.pretix.nginx'), roles
    with open(os.path.join(REPO_ROOT, 'playbooks', 'site.yml')) as handle:
        imported = [p['ansible.builtin.import_playbook'] for p in yaml.safe_load(handle)]
    # No earlier play of site.yml deploys nginx's service (secrets.yml only reads its TLS files).
    for name in imported[:imported.index('app.yml')]:
        with open(os.path.join(REPO_ROOT, 'playbooks', name)) as handle:
            text = handle.read()
        assert 'role: boxoffice.pretix.nginx' not in text, name


def test_the_initial_admin_login_is_refused(session):
    login_url = BASE_URL + '/control/login/'
    page = session.get(login_url, timeout=30)
    form = find_form(parse_forms(page.text), lambda f: any(n == 'password' for n, *_ in f['fields']),
                     'the login form')
    data = {name: value for name, value, *_ in form['fields']}
    data.update(email='admin@localhost', password='admin')
    response = session.post(urllib.parse.urljoin(login_url, form['action'] or login_url), data=data,
                            headers={'Referer': login_url}, timeout=30)
    assert response.status_code == 200 and '/control/login' in response.url, response.url
    dashboard = session.get(BASE_URL + '/control/', timeout=30, allow_redirects=False)
    assert dashboard.status_code == 302 and '/control/login' in dashboard.headers['Location']


def test_services_drop_every_capability(stack_services):
    expected = dict(CAP_ADD, monitoring=MONITORING_CAP_ADD)
    kinds = set()
    for service in stack_services:
        name, kind = service['Spec']['Name'], service_kind(service)
        spec = service['Spec']['TaskTemplate']['ContainerSpec']
        if kind in CAP_EXCEPTIONS:
            continue
        assert kind in expected, '%s (%s) is neither hardened nor a recorded exception' % (name, kind)
        kinds.add(kind)
        assert spec.get('CapabilityDrop') == ['ALL'], (name, spec.get('CapabilityDrop'))
        assert sorted(spec.get('CapabilityAdd') or []) == sorted(expected[kind]), (name, spec.get('CapabilityAdd'))
    # The local inventory runs every kind but the NFS server (one node: /data is a local volume).
    assert kinds == set(expected), set(expected) - kinds


def test_no_secret_in_a_service_definition(stack_services):
    """Environments, arguments and labels are visible to anyone who can inspect a service (and
    end up in logs and support bundles); the stack passes every secret as a Docker secret file."""
    names = role_file('secrets', 'defaults/main.yml')['secrets_stack_names']
    values = {name: read_vault(name) for name in names}
    for service in stack_services:
        spec = service['Spec']['TaskTemplate']['ContainerSpec']
        exposed = ' '.join((spec.get('Env') or []) + (spec.get('Args') or []) + (spec.get('Command') or [])
                           + ['%s=%s' % kv for kv in (service['Spec'].get('Labels') or {}).items()])
        leaked = sorted(name for name, value in values.items() if len(value) >= 8 and value in exposed)
        assert not leaked, '%s carries %s in its definition' % (service['Spec']['Name'], leaked)


def test_every_pulled_image_is_pinned_by_digest(stack_services):
    """The registry has no login: anyone who reaches it can push over a tag. A service pinned by
    digest runs what was built, whatever the tag says; the tag must still serve that digest
    (site.yml pushes it back when it does not)."""
    for service in stack_services:
        name, kind = service['Spec']['Name'], service_kind(service)
        image = service['Spec']['TaskTemplate']['ContainerSpec']['Image']
        if kind in LOCAL_IMAGE_KINDS:
            continue
        reference, _, digest = image.partition('@')
        assert digest.startswith('sha256:'), '%s runs %s, not pinned by digest' % (name, image)
        registry, path = reference.split('/', 1)
        repository, tag = path.rsplit(':', 1)
        assert registry_digest(registry, repository, digest) == digest, image
        assert registry_digest(registry, repository, tag) == digest, '%s: the tag serves other content' % image


def handshake(**options):
    """TLS handshake with the shop; returns (protocol, cipher) or raises ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Security level 0: this client must offer what it asks about (TLS 1.0, weak suites), so
    # that a refusal comes from the shop and not from the client's own OpenSSL defaults.
    context.set_ciphers(options.get('ciphers', 'ALL') + ':@SECLEVEL=0')
    if 'maximum_version' in options:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = options['maximum_version']
    with socket.create_connection((SHOP_HOST, SHOP_PORT), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=SHOP_HOST) as tls:
            return tls.version(), tls.cipher()[0]


def test_tls_offers_only_current_protocols_and_aead_suites():
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError, match='(?i)protocol|alert|version'):
            handshake(maximum_version=old)
    # TLS 1.2 with a suite outside the list: RSA key exchange (no forward secrecy), CBC.
    with pytest.raises(ssl.SSLError):
        handshake(maximum_version=ssl.TLSVersion.TLSv1_2, ciphers='AES128-SHA:AES256-SHA256')
    protocol, cipher = handshake(maximum_version=ssl.TLSVersion.TLSv1_2)
    assert protocol == 'TLSv1.2' and cipher in NGINX_DEFAULTS['nginx_ssl_ciphers'], (protocol, cipher)
    assert handshake()[0] == 'TLSv1.3'


@pytest.mark.parametrize('path', ['/', '/%s/' % EVENT_PATH, '/static/pretixbase/img/pretix-icon.svg',
                                  '/media/invoices/anything.pdf', '/no-such-page/'])
def test_security_headers_on_every_kind_of_response(session, path):
    response = session.get(BASE_URL + path, timeout=30, allow_redirects=False)
    # pretix's own value of a header is passed on where it sets one (nginx role README).
    for header in NGINX_DEFAULTS['nginx_security_headers']:
        assert response.headers.get(header), (path, response.status_code, header, response.headers)
    assert response.headers['X-Content-Type-Options'] == 'nosniff'
    assert int(response.headers['Strict-Transport-Security'].split('max-age=')[1].split(';')[0]) >= 15552000
    assert 'Server' not in response.headers or '/' not in response.headers['Server'], response.headers


EDGE_LABEL = role_file('boxoffice_defaults', 'defaults/main.yml')['boxoffice_defaults_label_prefix'] + '.edge'


def test_nginx_runs_once_on_every_edge_node_and_nowhere_else(stack_services, docker_client):
    """The edge has no single point of failure: one nginx on each node labelled for the edge."""
    nginx = next(s for s in stack_services if s['Spec']['Name'] == 'nginx')
    assert 'Global' in nginx['Spec']['Mode'], nginx['Spec']['Mode']
    assert nginx['Spec']['TaskTemplate']['Placement']['Constraints'] == ['node.labels.%s == true' % EDGE_LABEL]
    edge = {n['ID'] for n in docker_client.api.nodes() if (n['Spec'].get('Labels') or {}).get(EDGE_LABEL) == 'true'}
    assert edge, 'no node is labelled %s=true' % EDGE_LABEL
    running = [t['NodeID'] for t in docker_client.api.tasks(filters={'service': nginx['ID'], 'desired-state': 'running'})
               if t['Status']['State'] == 'running']
    assert sorted(running) == sorted(edge), (running, edge)


def test_the_tls_key_is_readable_by_root_only(stack_services):
    """The key is a file on the edge nodes (this machine here), never in the service's spec."""
    for copy in ('staged', 'live'):
        status = os.stat(os.path.join(NGINX_DEFAULTS['nginx_config_dir'], copy, 'key.pem'))
        assert (status.st_uid, oct(status.st_mode & 0o777)) == (0, '0o600'), (copy, status)
    nginx = next(s for s in stack_services if s['Spec']['Name'] == 'nginx')['Spec']['TaskTemplate']['ContainerSpec']
    mounts = {m['Target']: m for m in nginx.get('Mounts') or []}
    assert mounts[role_file('nginx', 'vars/main.yml')['nginx_container_config_dir']].get('ReadOnly'), mounts
    assert not nginx.get('Secrets') and not nginx.get('Configs'), nginx


def test_no_container_can_gain_privileges(docker_client):
    """Every running container of the engine has no_new_privs (daemon.json), read from the kernel's
    view of its first process, not from Docker's configuration."""
    containers = docker_client.api.containers()
    assert containers
    for container in containers:
        pid = docker_client.api.inspect_container(container['Id'])['State']['Pid']
        try:
            with open('/proc/%d/status' % pid, encoding='utf-8') as handle:
                status = dict(line.split(':', 1) for line in handle if ':' in line)
        except FileNotFoundError:  # it exited in between
            continue
        assert status['NoNewPrivs'].strip() == '1', '%s runs without no-new-privileges' % container['Names']
