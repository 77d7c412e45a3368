"""The collection as users get it: built with ansible-galaxy, installed into an empty collections
path, and every playbook called by its FQCN from outside the checkout. Nothing runs against Docker.
"""

import os
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

from conftest import REPO_ROOT, install_collection

BIN = os.path.dirname(sys.executable)
PLAYBOOKS = sorted(name[:-4] for name in os.listdir(os.path.join(REPO_ROOT, 'playbooks')) if name.endswith('.yml'))
FQCN = re.compile(r'\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b')


def load(path):
    with open(os.path.join(REPO_ROOT, path), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(tarball, collections path) of the collection built from the checkout and installed."""
    work = tmp_path_factory.mktemp('collection')
    tarball, dummy = install_collection(work)
    (work / 'hosts.yml').write_text(yaml.safe_dump({'all': {'children': {
        'swarm_managers': {'hosts': {'mgr1': {}}}, 'swarm_workers': {'hosts': {}}, 'swarm_remove': {'hosts': {}}}}}))
    return tarball, work


def test_tarball_holds_the_collection_once_and_no_development_state(installed):
    tarball, dummy = installed
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert 'LICENSE' in names and 'MANIFEST.json' in names
    assert 'roles/loadtest/files/loadtest/locustfile.py' in names
    junk = [n for n in names if re.match(r'^(\.ansible|\.venv|\.git|\.cache|collections|molecule|benchmarks|ee)(/|$)', n)
            or '__pycache__' in n or n.endswith('.tar.gz')]
    assert not junk, junk
    assert len([n for n in names if n.endswith('galaxy.yml')]) == 0


@pytest.mark.parametrize('playbook', PLAYBOOKS)
def test_playbook_is_callable_by_fqcn(installed, playbook):
    """From an empty directory, so neither the checkout's ansible.cfg nor its collections link help."""
    dummy, work = installed
    assert re.match(r'^[a-z0-9_]+$', playbook), '%s is not a valid FQCN part' % playbook
    env = dict(os.environ, HOME=str(work), ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH='%s:%s' % (work / 'collections', os.pathsep.join(
                   p for p in sys.path if p.endswith('site-packages'))))
    proc = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '--syntax-check', '-i', 'hosts.yml',
                           'boxoffice.pretix.%s' % playbook], cwd=work, env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_roles_read_nothing_outside_the_collection():
    offenders = []
    for root, dummy, files in os.walk(os.path.join(REPO_ROOT, 'roles')):
        for name in files:
            if name.endswith(('.yml', '.j2')):
                with open(os.path.join(root, name), encoding='utf-8') as handle:
                    # The collection's own plugins are in every copy of it (the autoscaler mounts
                    # its module_utils); anything else above the roles is the checkout's.
                    if re.search(r"role_path \}\}/\.\./\.\.(?!/plugins/)|playbook_dir", handle.read()):
                        offenders.append(os.path.join(root, name))
    assert not offenders


def test_dependencies_are_the_collections_the_content_calls():
    used = set()
    for top in ('roles', 'playbooks', 'plugins'):
        for root, dummy, files in os.walk(os.path.join(REPO_ROOT, top)):
            for name in files:
                if name.endswith(('.yml', '.py', '.j2')):
                    with open(os.path.join(root, name), encoding='utf-8') as handle:
                        used.update('%s.%s' % m for m in FQCN.findall(handle.read()))
    base = os.path.dirname(os.path.dirname(os.path.abspath(yaml.__file__)))
    bundled = os.path.join(base, 'ansible_collections')
    known = {'%s.%s' % (ns, coll) for ns in os.listdir(bundled) if os.path.isdir(os.path.join(bundled, ns))
             for coll in os.listdir(os.path.join(bundled, ns))}
    called = {c for c in used if c in known} - {'ansible.builtin', 'boxoffice.pretix'}
    assert called == set(load('galaxy.yml')['dependencies'])
