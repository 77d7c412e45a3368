"""Generic fixtures for boxoffice.pretix tests that run against the real Docker engine and Swarm.

Everything a test creates is named with the `bxtest-` prefix (see `unique_name`) and removed at
teardown, because the Docker daemon is shared with other engineers and other test runs.
"""

import collections
import datetime
import io
import ipaddress
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
import warnings

import docker
import pytest
import requests
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Makes ansible_collections.boxoffice.pretix importable for unit tests, as ansible.cfg does for
# Ansible (collections/ansible_collections/boxoffice/pretix links to the repository root).
sys.path.insert(0, os.path.join(REPO_ROOT, 'collections'))
TEST_PREFIX = 'bxtest-'
BUSYBOX_BINARY = '/bin/busybox'
BUSYBOX_IMAGE = 'boxoffice-test/busybox:latest'
# Applets linked into the test image; tests use sh/sleep/true/false.
BUSYBOX_APPLETS = ('sh', 'sleep', 'true', 'false', 'echo', 'cat', 'ls', 'ps', 'kill', 'env')


def image_context(name):
    """The build context of an image, roles/<role>/files/image of the role that owns it: the stack's
    images by boxoffice_defaults_images, and the ones the images role adds or playbooks build alone."""
    with open(os.path.join(REPO_ROOT, 'roles', 'boxoffice_defaults', 'defaults', 'main.yml'), encoding='utf-8') as handle:
        roles = {entry['name']: entry['role'] for entry in yaml.safe_load(handle)['boxoffice_defaults_images']}
    roles.update({'monitoring': 'monitoring', 'autoscaler': 'autoscale', 'dind-node': 'test_cluster'})
    return os.path.join(REPO_ROOT, 'roles', roles[name], 'files', 'image')


def debian_base_image(client=None):
    """The Debian base the images role debootstrapped (site.yml makes it before the tests run).

    BOXOFFICE_BASE_IMAGE overrides it; fails the test with what to run when there is none.
    """
    if os.environ.get('BOXOFFICE_BASE_IMAGE'):
        return os.environ['BOXOFFICE_BASE_IMAGE']
    client = client or docker.from_env()
    for image in client.images.list('boxoffice/base'):
        for tag in image.tags:
            if tag.startswith('boxoffice/base:bookworm-'):
                return tag
    pytest.fail('No Debian base image boxoffice/base:bookworm-*: run `ansible-playbook '
                'playbooks/images.yml` (or site.yml), or set BOXOFFICE_BASE_IMAGE.')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than ~5 minutes; deselect with -m "not slow"')


@pytest.fixture(scope='session')
def docker_client():
    """A Docker SDK client for a daemon that is a Swarm manager, or a clear failure."""
    try:
        client = docker.from_env()
        info = client.info()
    except docker.errors.DockerException as exc:
        pytest.fail('Docker engine not reachable (%s). Start it: nohup dockerd '
                    '>/var/log/dockerd.log 2>&1 &' % exc)
    swarm = info.get('Swarm') or {}
    if swarm.get('LocalNodeState') != 'active' or not swarm.get('ControlAvailable'):
        pytest.fail('This Docker engine is not a Swarm manager; run `docker swarm init` first.')
    yield client
    client.close()


def build_busybox_image(client):
    """Tag boxoffice-test/busybox:latest, a tiny image made from the host's static busybox.

    No registry is reachable here, so the image is imported from a tar built in memory.
    Raises RuntimeError when the host has no static busybox.
    """
    if not os.path.exists(BUSYBOX_BINARY):
        raise RuntimeError('%s is missing: install the Debian package busybox-static '
                           '(apt-get install -y busybox-static; .ci/run does this).' % BUSYBOX_BINARY)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        tar.add(BUSYBOX_BINARY, arcname='bin/busybox')
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo('bin/%s' % applet)
            link.type = tarfile.SYMTYPE
            link.linkname = 'busybox'
            tar.addfile(link)
    repository, tag = BUSYBOX_IMAGE.split(':')
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag,
                                      changes=['CMD ["sh"]', 'ENV PATH=/bin'])
    return BUSYBOX_IMAGE


@pytest.fixture(scope='session')
def busybox_image(docker_client):
    """The busybox test image (see build_busybox_image)."""
    try:
        return build_busybox_image(docker_client)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def unique_name():
    """Return a factory of collision-free names carrying the test prefix."""
    def make(purpose='svc'):
        return '%s%s-%s' % (TEST_PREFIX, purpose, uuid.uuid4().hex[:8])
    return make


@pytest.fixture
def swarm_services(docker_client):
    """Create Swarm services through the SDK's low-level API; all are removed at teardown.

    Call it with create_service keyword arguments (task_template, name, mode, labels, ...);
    it returns the service ID. The name must start with the test prefix. Callables appended to
    its `after_removal` list run once the services are removed (e.g. to remove their networks).
    """
    created = []

    def create(**kwargs):
        assert kwargs.get('name', '').startswith(TEST_PREFIX), 'test services must be prefixed'
        service_id = docker_client.api.create_service(**kwargs)['ID']
        created.append(service_id)
        return service_id

    create.after_removal = []
    yield create
    for service_id in created:
        try:
            docker_client.api.remove_service(service_id)
        except docker.errors.NotFound:
            pass
    # Task containers outlive the service for a moment; wait so later tests see a clean engine.
    deadline = time.monotonic() + 60
    while created and time.monotonic() < deadline:
        leftovers = [c for c in docker_client.api.containers(all=True)
                     if c['Labels'].get('com.docker.swarm.service.id') in created]
        if not leftovers:
            break
        time.sleep(0.5)
    for cleanup in create.after_removal:
        cleanup()


@pytest.fixture
def busybox_service(swarm_services, busybox_image, unique_name):
    """Create a busybox service tuned for fast tests; returns (service ID, name).

    Short stop grace period, restart delay and update monitor keep each rollout to seconds
    (busybox sleep ignores SIGTERM, so the default 10 s grace would dominate every test).
    """
    second = 10 ** 9

    def create(name=None, replicas=1, command=('sleep', '86400'), mode=None, labels=None, **task_extra):
        """task_extra: more TaskTemplate keys (Networks, Resources, ...) for richer specs."""
        name = name or unique_name()
        task_template = dict({
            'ContainerSpec': {'Image': busybox_image, 'Command': list(command),
                              'StopGracePeriod': second},
            'RestartPolicy': {'Condition': 'any', 'Delay': second},
        }, **task_extra)
        service_id = swarm_services(
            name=name, task_template=task_template, labels=labels or {},
            mode=mode or {'Replicated': {'Replicas': replicas}},
            update_config={'Parallelism': 1, 'Monitor': second, 'FailureAction': 'pause'},
            endpoint_spec={'Mode': 'dnsrr'})
        return service_id, name
    return create


@pytest.fixture
def overlay_network(docker_client, unique_name, swarm_services):
    """An attachable overlay network of the test's own; returns its ID.

    It is removed by swarm_services' teardown, after the services that use it are gone.
    """
    network = docker_client.networks.create(unique_name('net'), driver='overlay', attachable=True)

    def remove():
        # Swarm detaches the network from removed services' tasks a moment after they are gone.
        deadline = time.monotonic() + 60
        while True:
            try:
                network.remove()
                return
            except docker.errors.APIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    swarm_services.after_removal.append(remove)
    return network.id


def new_key():
    """A fresh ECDSA P-256 key, as the nginx role generates for its self-signed pair."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cert_pem(key, names, not_before=None, not_after=None, issuer_key=None, addresses=(), organization=None):
    """A certificate for `names` (subjectAltName DNS names, the first also the common name) and IP
    `addresses`, with `key`'s public key, signed by issuer_key (default: itself). Valid from a day
    ago for 90 days unless told otherwise; `organization` gives it a subject of its own."""
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]
                        + ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []))
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'bxtest CA')]) if issuer_key else subject
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(days=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .sign(issuer_key or key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def registry_digest(registry, repository, reference):
    """The digest a registry (host:port) serves for a tag or digest: HEAD of its manifest, on
    loopback or a test's own registry, never through a proxy from the environment."""
    request = urllib.request.Request(
        'http://%s/v2/%s/manifests/%s' % (registry, repository, reference), method='HEAD',
        headers={'Accept': 'application/vnd.docker.distribution.manifest.v2+json,'
                           'application/vnd.oci.image.manifest.v1+json'})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return response.headers['Docker-Content-Digest']


def wait_for(predicate, timeout=180, message='condition', interval=0.5):
    """Poll predicate until it returns something truthy; fail the test after timeout seconds.

    Used to reach a starting state (e.g. all replicas running before a container is killed),
    never to assert how long something took. message may be a callable, called only at the
    timeout, so that it can describe what was seen instead.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail('timed out after %ss waiting for %s' % (timeout, message() if callable(message) else message))


def deployed_service(client, name):
    """The inspected Swarm service `name` of the stack site.yml deploys; fails the test when absent."""
    try:
        return client.api.inspect_service(name)
    except Exception as exc:  # docker.errors.NotFound, or any API failure: the stack is not there
        pytest.fail('%s is not deployed here (%s): run `ansible-playbook site.yml` first' % (name, exc))


def deployed_image(client, name):
    """The image reference the deployed Swarm service `name` runs (see deployed_service)."""
    return deployed_service(client, name)['Spec']['TaskTemplate']['ContainerSpec']['Image']


def running_task_count(client, service_id):
    """Independent count of the Docker CLI's rule, for checking what the modules report."""
    ready = set(n['ID'] for n in client.api.nodes() if n['Status']['State'] == 'ready')
    return sum(1 for t in client.api.tasks(filters={'service': service_id})
               if t['DesiredState'] == 'running' and t['Status']['State'] == 'running'
               and t.get('NodeID') in ready)


def run_ansible_module(module, args, check=False, diff=False, timeout=900, python=sys.executable):
    """Run one module on localhost through the real `ansible` CLI and return its result dict.

    Uses the repository's ansible.cfg (so boxoffice.pretix.* resolves from the checkout) and the
    json callback, which makes the result machine-readable for assertions.
    """
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_NOCOLOR='1')
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible'), 'localhost',
           '-i', 'localhost,', '-c', 'local',
           '-e', 'ansible_python_interpreter=%s' % python,
           '-m', module, '-a', json.dumps(args)]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('ansible printed no JSON (rc=%d)\nstdout:\n%s\nstderr:\n%s'
                             % (proc.returncode, proc.stdout, proc.stderr))
    result = output['plays'][0]['tasks'][0]['hosts']['localhost']
    result['rc'] = proc.returncode
    return result


def vault_env(tmp_path):
    """Environment for ansible-playbook with a vault password of the test's own (made once in
    tmp_path/vault-password), for secret stores under tmp_path."""
    password = tmp_path / 'vault-password'
    if not password.exists():
        password.write_text(uuid.uuid4().hex + '\n')
        password.chmod(0o600)
    return dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_VAULT_PASSWORD_FILE=str(password))


def install_collection(work):
    """Build the collection from the checkout and install it under work/collections, as a user
    (or an execution environment) gets it. Returns (tarball path, collections path)."""
    env = dict(os.environ, HOME=str(work), ANSIBLE_NOCOLOR='1')

    def galaxy(*args):
        proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-galaxy'), 'collection']
                              + list(args), cwd=str(work), env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    galaxy('build', REPO_ROOT, '--output-path', str(work))
    [tarball] = [os.path.join(str(work), n) for n in os.listdir(str(work)) if n.endswith('.tar.gz')]
    galaxy('install', tarball, '--no-deps', '-p', os.path.join(str(work), 'collections'))
    return tarball, os.path.join(str(work), 'collections')


def run_playbook(*args, timeout=900):
    """Run ansible-playbook from the checkout (its ansible.cfg and default local inventory).

    Returns (exit code, stdout + stderr).
    """
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')]
                          + list(args), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          check=False, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def ansible_module():
    """The run_ansible_module helper as a fixture, for tests outside this directory."""
    return run_ansible_module


# The stack's Prometheus as this host reaches it: through nginx, under the monitoring UIs' path
# (roles/nginx: nginx_monitoring_ui_path, nginx_monitoring_ui_user, nginx_monitoring_ui_password_secret).
PROMETHEUS_PATH = '/monitoring/prometheus'
PROMETHEUS_USER = 'monitoring'
PROMETHEUS_PASSWORD_SECRET = 'monitoring_ui_password'


class Prometheus(collections.namedtuple('Prometheus', 'url username password')):
    """The deployed Prometheus behind nginx: its URL and the UI's basic-auth login."""

    def get(self, path, auth=True, **params):
        """GET url + path with the login (none without auth), not verifying the self-signed certificate."""
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', urllib3.exceptions.InsecureRequestWarning)
            return requests.get(self.url + path, params=params, verify=False, timeout=30,
                                auth=(self.username, self.password) if auth else None)


@pytest.fixture(scope='session')
def prometheus():
    """The real Prometheus that site.yml deploys (roles/monitoring), as a Prometheus(url, username,
    password) for the autoscaler's prometheus_* options.

    url is https://localhost/monitoring/prometheus (BOXOFFICE_E2E_URL in place of https://localhost
    when set): nginx, with the stack's self-signed certificate, so callers do not verify it.
    username and password are those of nginx's basic auth, the password decrypted from the
    secrets role's store as the e2e tests read secrets (BOXOFFICE_SECRETS_DIR,
    BOXOFFICE_VAULT_PASSWORD / ANSIBLE_VAULT_PASSWORD_FILE). Fails the test with what to run when
    monitoring is not deployed, or does not answer a query.
    """
    # The e2e tests' reader of the secret store; reused, never copied (chaoslib does the same).
    e2e_dir = os.path.join(REPO_ROOT, 'tests', 'e2e')
    if e2e_dir not in sys.path:
        sys.path.insert(0, e2e_dir)
    import test_buy_ticket as e2e  # pylint: disable=import-outside-toplevel

    deploy = ('deploy the stack with monitoring: `ansible-playbook site.yml -e secrets_generate=true` '
              '(roles/monitoring, and nginx with nginx_monitoring_ui)')
    secret = os.path.join(e2e.SECRETS_DIR, PROMETHEUS_PASSWORD_SECRET + '.vault')
    if not os.path.exists(secret):
        pytest.fail('Monitoring is not deployed here: %s is missing; %s.' % (secret, deploy))
    server = Prometheus(e2e.BASE_URL + PROMETHEUS_PATH, PROMETHEUS_USER, e2e.read_vault(PROMETHEUS_PASSWORD_SECRET))
    probe = server.url + '/api/v1/query?query=vector(1)'
    try:
        answer = server.get('/api/v1/query', query='vector(1)')
    except requests.RequestException as exc:
        pytest.fail('Monitoring is not deployed here: %s cannot be reached (%s); %s.' % (probe, exc, deploy))
    try:
        status = answer.json().get('status')
    except ValueError:
        status = None
    if answer.status_code != 200 or status != 'success':
        pytest.fail('Prometheus does not answer a query as user %s: %s gave HTTP %d, %r. Is monitoring '
                    'deployed, with this secret store? Else %s.'
                    % (server.username, probe, answer.status_code, answer.text[:200], deploy))
    return server
