"""Render a role's template with Ansible itself, on the controller, as the role does: with the role's
defaults and vars and the boxoffice_defaults role's names, against an inventory. No Docker needed.
"""

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT

PLAYBOOK = '''
- hosts: localhost
  connection: local
  become: false
  gather_facts: false
  tasks:
    - name: Load the shared names and the role's defaults and vars
      ansible.builtin.include_vars: "{{ item }}"
      loop: %(var_files)s
    - name: Render each template
      ansible.builtin.copy:
        content: "{{ lookup('ansible.builtin.template', item.src) }}"
        dest: "{{ item.dest }}"
        mode: "0644"
      loop: %(templates)s
'''


def render(tmp_path, role, templates, inventory=None, extra_vars=None):
    """{template name: rendered text} of roles/<role>/templates/<name> for each name."""
    role_dir = os.path.join(REPO_ROOT, 'roles', role)
    var_files = [os.path.join(REPO_ROOT, 'roles', 'boxoffice_defaults', 'defaults', 'main.yml')]
    var_files += [os.path.join(role_dir, sub, 'main.yml') for sub in ('defaults', 'vars')
                  if os.path.exists(os.path.join(role_dir, sub, 'main.yml'))]
    items = [{'src': os.path.join(role_dir, 'templates', name), 'dest': str(tmp_path / name)} for name in templates]
    playbook = tmp_path / 'render.yml'
    playbook.write_text(PLAYBOOK % {'var_files': json.dumps(var_files), 'templates': json.dumps(items)})
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), str(playbook),
               '-i', inventory or 'localhost,', '-e', 'ansible_python_interpreter=%s' % sys.executable]
    if extra_vars:
        command += ['-e', json.dumps(extra_vars)]
    # From the checkout, so its ansible.cfg resolves boxoffice.pretix.* as the roles do.
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: (tmp_path / name).read_text() for name in templates}
