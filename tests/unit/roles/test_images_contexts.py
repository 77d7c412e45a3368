"""Where the images role finds each build context: roles/<role>/files/image of the role that owns the
image. Runs the role's refs.yml on localhost with images_base_mode=pull, which reads the contexts
and computes the tags without Docker, a registry or the build host's apt sources.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO_ROOT

PLAY = '''
- name: Compute the image references
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Compute them
      ansible.builtin.include_role:
        name: boxoffice.pretix.images
        tasks_from: refs.yml
    - name: Write the tags in build order
      ansible.builtin.copy:
        content: "{{ images_tags | dict2items | to_json }}"
        dest: %(dest)s
        mode: "0644"
'''


def refs(tmp_path, extra_vars):
    """(exit code, [[name, tag], ...] in build order or None, output) of refs.yml with extra_vars."""
    dest = tmp_path / 'tags.json'
    playbook = tmp_path / 'refs.yml'
    playbook.write_text(PLAY % {'dest': json.dumps(str(dest))})
    extra = dict({'images_build_host': 'localhost', 'images_base_mode': 'pull'}, **extra_vars)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), str(playbook),
                           '-i', 'localhost,', '-e', json.dumps(extra)],
                          cwd=REPO_ROOT, env=dict(os.environ, ANSIBLE_NOCOLOR='1'), capture_output=True,
                          text=True, check=False, timeout=300)
    tags = [[item['key'], item['value']] for item in json.loads(dest.read_text())] if dest.exists() else None
    return proc.returncode, tags, proc.stdout + proc.stderr


def stack_images():
    with open(os.path.join(REPO_ROOT, 'roles', 'boxoffice_defaults', 'defaults', 'main.yml'), encoding='utf-8') as handle:
        return yaml.safe_load(handle)['boxoffice_defaults_images']


def test_every_stack_image_has_its_context_in_its_role():
    images = stack_images()
    assert [image['name'] for image in images] == [
        'registry', 'postgres', 'pgpool', 'redis', 'haproxy', 'pretix', 'nginx', 'locust']
    for image in images:
        assert os.path.isfile(os.path.join(REPO_ROOT, 'roles', image['role'], 'files', 'image', 'Dockerfile')), image
    # The images role owns no other context than the registry's.
    assert os.listdir(os.path.join(REPO_ROOT, 'roles', 'images', 'files')) == ['image']


def test_the_default_list_resolves_in_build_order(tmp_path):
    rc, tags, output = refs(tmp_path, {})
    assert rc == 0, output
    assert [name for name, tag in tags] == [image['name'] for image in stack_images()] + ['monitoring', 'autoscaler']


def test_a_name_a_role_and_a_context_give_the_same_tag(tmp_path):
    found = []
    for entry in ['locust', {'name': 'locust', 'role': 'loadtest'},
                  {'name': 'locust', 'context': os.path.join(REPO_ROOT, 'roles', 'loadtest', 'files', 'image')}]:
        rc, tags, output = refs(tmp_path, {'images_list': [entry], 'images_registry_external': True})
        assert rc == 0, output
        found.append(tags)
    assert found[0] == found[1] == found[2]


@pytest.mark.parametrize('entry, message', [
    ('dind-node', 'images_list must be'),
    ({'name': 'locust'}, 'images_list must be'),
    ({'name': 'locust', 'role': '../loadtest'}, 'images_list must be'),
    ({'name': 'locust', 'role': 'nginx_missing'}, "Image 'locust' has no build context"),
])
def test_bad_entries_fail_before_anything_is_read(tmp_path, entry, message):
    rc, tags, output = refs(tmp_path, {'images_list': [entry], 'images_registry_external': True})
    assert rc != 0 and tags is None
    assert message in output, output
