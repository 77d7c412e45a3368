"""The images role against the real Docker engine and Swarm of this machine.

Fast tests run the role's refs.yml entry point and its input checks (no builds).
`test_build_push_and_rebuild` is the end-to-end path: debootstrap a base, build the
registry, dind-node and locust images, run the registry service, push, run again
(nothing may change or rebuild), change one context file (only that image gets a new
tag). It builds everything cold under its own namespace, so it is marked slow
(about 6-12 minutes on 2 cores, depending on load).

Everything Docker-side is named with the `bxtest-` prefix and removed at teardown.
"""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

import docker
import pytest

from conftest import REPO_ROOT, TEST_PREFIX, image_context, registry_digest

INVENTORY = os.path.join(REPO_ROOT, 'inventories', 'local', 'hosts.yml')
NAMESPACE = TEST_PREFIX + 'images'
SERVICE = TEST_PREFIX + 'registry'
VOLUME = TEST_PREFIX + 'registry-data'
OWN_IMAGES = ['registry', 'dind-node', 'locust']
TAG = re.compile(r'^[0-9a-f]{12}$')
# The dind-node run flags from TEST-ENVIRONMENT.md: every capability the kernel offers.
DIND_CAPS = ['ALL']
DIND_CAP_DROP = ['SYS_RESOURCE']

# A play that only computes the references (tasks_from: refs.yml) and shows them.
REFS_PLAY = """
- name: Compute image references
  hosts: swarm_managers[0]
  gather_facts: false
  tasks:
    - name: Compute the references
      ansible.builtin.include_role:
        name: boxoffice.pretix.images
        tasks_from: refs.yml
    - name: Show the references
      ansible.builtin.debug:
        var: images_refs
"""

# playbooks/images.yml itself, followed by a play that shows the facts it left.
BUILD_PLAY = """
- name: The images playbook
  ansible.builtin.import_playbook: %s
- name: Show what it built
  hosts: swarm_managers[0]
  gather_facts: false
  tasks:
    - name: Show the references
      ansible.builtin.debug:
        var: images_refs
""" % os.path.join(REPO_ROOT, 'playbooks', 'images.yml')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_playbook(play_text, extra_vars, workdir, check=False, timeout=3600):
    """Run a playbook with the json callback; return (rc, parsed output, stderr)."""
    playbook = os.path.join(workdir, 'play-%d.yml' % time.monotonic_ns())
    with open(playbook, 'w') as handle:
        handle.write(play_text)
    vars_file = playbook + '.vars.json'
    with open(vars_file, 'w') as handle:
        json.dump(extra_vars, handle)
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_NOCOLOR='1')
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
           '-i', INVENTORY, playbook, '-e', '@' + vars_file]
    if check:
        cmd.append('--check')
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('ansible-playbook printed no JSON (rc=%d)\nstdout:\n%s\nstderr:\n%s'
                             % (proc.returncode, proc.stdout[-5000:], proc.stderr[-5000:]))
    return proc.returncode, output, proc.stderr


def task_results(output, name):
    """Every host result of the tasks whose name ends with `name`."""
    found = []
    for play in output['plays']:
        for task in play['tasks']:
            if task['task']['name'].endswith(name):
                found.append(task['hosts']['localhost'])
    return found


def shown_refs(output):
    return task_results(output, 'Show the references')[-1]['images_refs']


def failure_messages(output):
    """The messages of every failed task, and of every failed item of looped tasks."""
    messages = []
    for play in output['plays']:
        for task in play['tasks']:
            for result in task['hosts'].values():
                if result.get('failed'):
                    messages.append(result.get('msg', ''))
                    messages.extend(item.get('msg', '') for item in result.get('results', [])
                                    if item.get('failed'))
    return messages


def copy_contexts(target, names):
    for name in names:
        shutil.copytree(image_context(name), os.path.join(target, name))


def entries(contexts, names):
    """images_list entries {name, context} for the contexts copied to contexts/<name>."""
    return [{'name': name, 'context': os.path.join(str(contexts), name)} for name in names]


# ---------------------------------------------------------------- fast: no builds

@pytest.fixture
def tiny_contexts(tmp_path):
    """Contexts where `app` takes the base and `web` takes app's image (like nginx/pretix)."""
    contexts = tmp_path / 'contexts'
    copy_contexts(str(contexts), ['registry'])
    (contexts / 'app').mkdir()
    (contexts / 'app' / 'Dockerfile').write_text(
        'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY app.txt /app.txt\n')
    (contexts / 'app' / 'app.txt').write_text('one\n')
    (contexts / 'web').mkdir()
    (contexts / 'web' / 'Dockerfile').write_text(
        'ARG BASE_IMAGE\nARG APP_IMAGE\nFROM ${APP_IMAGE} AS app\nFROM ${BASE_IMAGE}\n'
        'COPY --from=app /app.txt /web.txt\n')
    return contexts


def refs_vars(contexts, images):
    return {'images_list': entries(contexts, images), 'images_namespace': NAMESPACE}


def test_refs_follow_content(tiny_contexts, tmp_path):
    images = ['registry', 'app', 'web']
    rc, first, err = run_playbook(REFS_PLAY, refs_vars(tiny_contexts, images), str(tmp_path))
    assert rc == 0, failure_messages(first) or err
    assert first['stats']['localhost']['changed'] == 0
    refs = shown_refs(first)
    assert sorted(refs) == sorted(images)
    for name, ref in refs.items():
        registry, repo_tag = ref.split('/', 1)
        repo, tag = repo_tag.split(':')
        assert registry == '127.0.0.1:5000' and repo == name and TAG.match(tag), ref

    rc, again, err = run_playbook(REFS_PLAY, refs_vars(tiny_contexts, images), str(tmp_path))
    assert rc == 0, failure_messages(again) or err
    assert shown_refs(again) == refs, 'same content must give the same tags'

    # app changes -> app's tag changes, and web's (it is built FROM app); registry keeps its tag.
    (tiny_contexts / 'app' / 'app.txt').write_text('two\n')
    rc, changed, err = run_playbook(REFS_PLAY, refs_vars(tiny_contexts, images), str(tmp_path))
    assert rc == 0, failure_messages(changed) or err
    after = shown_refs(changed)
    assert after['registry'] == refs['registry']
    assert after['app'] != refs['app']
    assert after['web'] != refs['web']

    # A new file in web changes only web.
    (tiny_contexts / 'web' / 'extra.conf').write_text('x\n')
    rc, added, err = run_playbook(REFS_PLAY, refs_vars(tiny_contexts, images), str(tmp_path))
    assert rc == 0, failure_messages(added) or err
    last = shown_refs(added)
    assert last['app'] == after['app'] and last['registry'] == after['registry']
    assert last['web'] != after['web']


def test_image_argument_must_name_an_earlier_image(tiny_contexts, tmp_path):
    rc, output, _ = run_playbook(REFS_PLAY, refs_vars(tiny_contexts, ['registry', 'web', 'app']),
                                 str(tmp_path))
    assert rc != 0
    messages = ' '.join(failure_messages(output))
    assert 'web: ARG APP_IMAGE' in messages, messages


def test_missing_context_fails_before_any_change(tmp_path):
    contexts = tmp_path / 'contexts'
    copy_contexts(str(contexts), ['registry'])
    rc, output, _ = run_playbook(BUILD_PLAY, {
        'images_list': entries(contexts, ['registry', 'no-such-image']),
        'images_namespace': NAMESPACE, 'images_registry_service': SERVICE,
        'images_registry_volume': VOLUME}, str(tmp_path))
    assert rc != 0
    assert output['stats']['localhost']['changed'] == 0
    messages = ' '.join(failure_messages(output))
    assert "'no-such-image' has no build context" in messages, messages
    assert os.path.join(str(contexts), 'no-such-image', 'Dockerfile') in messages


def test_registry_image_is_required_for_the_registry_service(tmp_path):
    contexts = tmp_path / 'contexts'
    copy_contexts(str(contexts), ['locust'])
    rc, output, _ = run_playbook(REFS_PLAY, refs_vars(contexts, ['locust']), str(tmp_path))
    assert rc != 0
    assert 'images_registry_external' in ' '.join(failure_messages(output))


def test_check_mode_on_a_cold_namespace_changes_nothing(docker_client, tmp_path):
    contexts = tmp_path / 'contexts'
    copy_contexts(str(contexts), ['registry', 'locust'])
    namespace = TEST_PREFIX + 'check-%d' % os.getpid()
    rc, output, err = run_playbook(BUILD_PLAY, {
        'images_list': entries(contexts, ['registry', 'locust']),
        'images_namespace': namespace, 'images_registry_service': namespace,
        'images_registry_volume': namespace, 'images_registry_port': free_port(),
        'images_build_dir': str(tmp_path / 'build')}, str(tmp_path), check=True)
    assert rc == 0, failure_messages(output) or err[-3000:]
    # It reports what it would do ...
    assert output['stats']['localhost']['changed'] > 0
    assert task_results(output, 'Report the base image that check mode would bootstrap')[0]['changed']
    # ... and does none of it.
    assert not [i for i in docker_client.images.list() if any(t.startswith(namespace) for t in i.tags)]
    assert not docker_client.services.list(filters={'name': namespace})
    assert not [v for v in docker_client.volumes.list() if v.name == namespace]
    assert not (tmp_path / 'build').exists()


# ------------------------------------------------------- slow: real builds and push

def local_images(client):
    """Local tag -> image ID for everything in the test namespace."""
    tags = {}
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(NAMESPACE + '/'):
                tags[tag] = image.id
    return tags


def ref_tag(ref):
    """The tag of registry/name:tag@sha256:digest (or of registry/name:tag)."""
    return ref.split('@', 1)[0].rsplit(':', 1)[1]


def registry_tags(port, name):
    with urllib.request.urlopen('http://127.0.0.1:%d/v2/%s/tags/list' % (port, name),
                                timeout=10) as response:
        return json.load(response).get('tags') or []


@pytest.fixture(scope='module')
def built(docker_client, tmp_path_factory):
    """Run playbooks/images.yml cold for our images in the bxtest- namespace; clean up after."""
    workdir = tmp_path_factory.mktemp('images')
    contexts = workdir / 'contexts'
    copy_contexts(str(contexts), OWN_IMAGES)
    port = free_port()
    extra = {'images_list': entries(contexts, OWN_IMAGES),
             'images_namespace': NAMESPACE, 'images_registry_service': SERVICE,
             'images_registry_volume': VOLUME, 'images_registry_port': port,
             'images_build_dir': str(workdir / 'build')}
    started = time.monotonic()
    rc, output, err = run_playbook(BUILD_PLAY, extra, str(workdir))
    print('cold build of %s + base: %.0f s' % (', '.join(OWN_IMAGES), time.monotonic() - started))
    state = {'rc': rc, 'output': output, 'err': err, 'extra': extra, 'port': port,
             'contexts': contexts, 'workdir': workdir}
    yield state
    cleanup(docker_client, port)


def cleanup(client, port):
    try:
        client.services.get(SERVICE).remove()
    except docker.errors.NotFound:
        pass
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not client.containers.list(all=True, filters={'label': 'com.docker.swarm.service.name=' + SERVICE}):
            break
        time.sleep(1)
    try:
        client.volumes.get(VOLUME).remove()
    except docker.errors.NotFound:
        pass
    pushed = '127.0.0.1:%d/' % port
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(NAMESPACE + '/') or tag.startswith(pushed):
                try:
                    client.images.remove(tag)
                except docker.errors.APIError:
                    pass


@pytest.mark.slow
def test_build_push_and_rebuild(built, docker_client):
    assert built['rc'] == 0, failure_messages(built['output']) or built['err'][-3000:]
    port = built['port']
    refs = shown_refs(built['output'])
    assert sorted(refs) == sorted(OWN_IMAGES)

    # Built locally under their content tags, and served by the registry service.
    images = local_images(docker_client)
    base = [tag for tag in images if tag.startswith(NAMESPACE + '/base:bookworm-')]
    assert len(base) == 1, images
    for name, ref in refs.items():
        tag = ref_tag(ref)
        # Pinned to the digest the registry serves for the tag, which this engine pushed.
        assert ref == '127.0.0.1:%d/%s:%s@%s' % (port, name, tag, registry_digest('127.0.0.1:%d' % port, name, tag))
        assert TAG.match(tag), ref
        assert '%s/%s:%s' % (NAMESPACE, name, tag) in images
        assert tag in registry_tags(port, name)
    service = docker_client.services.get(SERVICE)
    assert service.attrs['Spec']['TaskTemplate']['ContainerSpec']['Image'] == \
        '%s/registry:%s' % (NAMESPACE, ref_tag(refs['registry']))

    # Second run: nothing changes, nothing is bootstrapped, built or pushed.
    rc, second, err = run_playbook(BUILD_PLAY, built['extra'], str(built['workdir']))
    assert rc == 0, failure_messages(second) or err[-3000:]
    assert second['stats']['localhost']['changed'] == 0
    assert shown_refs(second) == refs
    assert all(r.get('skipped') for r in task_results(second, 'Debootstrap the base file system'))
    assert not task_results(second, 'Build the images')[0].get('results')
    assert not task_results(second, 'Push the images the registry lacks or serves other content for')[0].get('results')
    assert local_images(docker_client) == images

    # Check mode on the converged state predicts no change either.
    rc, checked, err = run_playbook(BUILD_PLAY, built['extra'], str(built['workdir']), check=True)
    assert rc == 0, failure_messages(checked) or err[-3000:]
    assert checked['stats']['localhost']['changed'] == 0

    # One changed file: a new tag for that image only, built and pushed; the rest untouched.
    healthcheck = built['contexts'] / 'locust' / 'healthcheck.py'
    healthcheck.write_text(healthcheck.read_text() + '\n# changed by test_images\n')
    rc, third, err = run_playbook(BUILD_PLAY, built['extra'], str(built['workdir']))
    assert rc == 0, failure_messages(third) or err[-3000:]
    new_refs = shown_refs(third)
    assert new_refs['locust'] != refs['locust']
    assert {k: v for k, v in new_refs.items() if k != 'locust'} == \
        {k: v for k, v in refs.items() if k != 'locust'}
    new_tag = ref_tag(new_refs['locust'])
    assert '%s/locust:%s' % (NAMESPACE, new_tag) in local_images(docker_client)
    assert new_tag in registry_tags(port, 'locust')
    built_now = [r['item'] for r in task_results(third, 'Build the images')[0]['results']
                 if r.get('changed')]
    assert built_now == ['locust']

    # Someone who reaches the registry overwrites a tag with other content: the next run pushes
    # back what was built here, and services stay pinned to that digest, not to the intruder's.
    tag = ref_tag(new_refs['registry'])
    intruder = '127.0.0.1:%d/registry:%s' % (port, tag)
    docker_client.images.get('%s/locust:%s' % (NAMESPACE, new_tag)).tag(intruder)
    docker_client.images.push(intruder)
    assert registry_digest('127.0.0.1:%d' % port, 'registry', tag) != new_refs['registry'].split('@')[1]
    rc, fourth, err = run_playbook(BUILD_PLAY, built['extra'], str(built['workdir']))
    assert rc == 0, failure_messages(fourth) or err[-3000:]
    assert shown_refs(fourth) == new_refs
    assert registry_digest('127.0.0.1:%d' % port, 'registry', tag) == new_refs['registry'].split('@')[1]
    pushed = [r['item'] for r in task_results(fourth, 'Push the images the registry lacks or serves other content for')[0]['results']
              if r.get('changed')]
    assert pushed == ['registry']


@pytest.mark.slow
def test_built_images_work(built, docker_client):
    assert built['rc'] == 0, failure_messages(built['output']) or built['err'][-3000:]
    refs = shown_refs(built['output'])
    local = {name: '%s/%s:%s' % (NAMESPACE, name, ref_tag(ref)) for name, ref in refs.items()}

    # The registry service's own healthcheck passes.
    deadline = time.monotonic() + 120
    health = None
    while time.monotonic() < deadline:
        tasks = docker_client.containers.list(
            filters={'label': 'com.docker.swarm.service.name=' + SERVICE})
        health = tasks[0].attrs['State'].get('Health', {}).get('Status') if tasks else None
        if health == 'healthy':
            break
        time.sleep(2)
        for container in tasks:
            container.reload()
    assert health == 'healthy'

    out = docker_client.containers.run(local['locust'], ['--version'], remove=True)
    assert b'2.47.0' in out

    # A dind node with the documented flags, whose engine the docker_engine role has configured
    # (node-boot starts dockerd only once /etc/docker/daemon.json exists), starts dockerd and
    # turns healthy.
    name = TEST_PREFIX + 'dind-%d' % os.getpid()
    container = docker_client.containers.create(
        local['dind-node'], name=name, cap_add=DIND_CAPS, cap_drop=DIND_CAP_DROP,
        security_opt=['seccomp=unconfined', 'apparmor=unconfined'], cgroupns='host',
        volumes={'/sys/fs/cgroup': {'bind': '/sys/fs/cgroup', 'mode': 'rw'},
                 name: {'bind': '/var/lib/docker', 'mode': 'rw'}})
    try:
        daemon_json = io.BytesIO()
        with tarfile.open(fileobj=daemon_json, mode='w') as archive:
            directory = tarfile.TarInfo('etc/docker')
            directory.type, directory.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(directory)
            entry = tarfile.TarInfo('etc/docker/daemon.json')
            entry.size = 3
            archive.addfile(entry, io.BytesIO(b'{}\n'))
        container.put_archive('/', daemon_json.getvalue())
        container.start()
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline:
            container.reload()
            status = container.attrs['State'].get('Health', {}).get('Status')
            if status in ('healthy',) or container.status == 'exited':
                break
            time.sleep(2)
        assert status == 'healthy', container.logs()[-2000:]
        code, version = container.exec_run(['docker', 'version', '--format', '{{.Server.Version}}'])
        assert code == 0 and version.startswith(b'20.10.'), version
    finally:
        container.remove(force=True)
        try:
            docker_client.volumes.get(name).remove()
        except docker.errors.NotFound:
            pass
