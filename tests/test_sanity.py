"""ansible-test sanity and ansible-doc for the collection's plugins.

scripts/sanity.sh takes about 45 s once its virtualenvs exist and about 4.5 minutes on the first
run (it builds one virtualenv per sanity test from PyPI, kept under .cache/ansible-test-home).
"""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

ANSIBLE_BIN = os.path.dirname(sys.executable)


def test_ansible_test_sanity_passes():
    proc = subprocess.run([os.path.join(REPO_ROOT, 'scripts', 'sanity.sh')], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=False, timeout=1800,
                          env=dict(os.environ, PATH=ANSIBLE_BIN + os.pathsep + os.environ['PATH']))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]


@pytest.mark.parametrize('module', ['swarm_service_scale', 'swarm_service_heal', 'swarm_service_wait',
                                    'swarm_service_autoscale'])
def test_module_docs_render(module):
    proc = subprocess.run([os.path.join(ANSIBLE_BIN, 'ansible-doc'), 'boxoffice.pretix.%s' % module],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 'boxoffice.pretix.%s' % module in proc.stdout
    assert 'EXAMPLES' in proc.stdout and 'RETURN VALUES' in proc.stdout
