"""A lint of every task the collection runs: a task that carries a credential - the swarm's join
tokens, pretix's API token or admin password, the secret store's values - must be no_log, on
itself or on an enclosing block, so that no output, callback or AWX job event shows it.

A task carries one when a Jinja expression in its arguments, vars, loop or labels names one,
directly or through a var defined on it or on an enclosing block, or when its module returns one
(docker_swarm_info and docker_swarm report the join tokens; the secret_store action is left out, as
it marks its own result no_log once it holds values and keeps its errors readable). Conditions (when, that, until, changed_when, failed_when) are evaluated, never shown,
and are not looked at. No Docker needed.
"""

import glob
import os
import re

import pytest
import yaml

from conftest import REPO_ROOT

# Keywords whose values are conditions: Ansible evaluates them and shows at most the expression.
CONDITIONS = {'when', 'that', 'until', 'changed_when', 'failed_when'}
BLOCK_KEYS = ('block', 'rescue', 'always')
# Includes and imports carry no value to a module; the tasks they bring are checked on their own.
INCLUDES = re.compile(r'(^|\.)(include_role|import_role|include_tasks|import_tasks|import_playbook|include_vars)$')
# Modules whose result holds a credential whatever their arguments.
SECRET_RESULTS = re.compile(r'(^|\.)docker_swarm_info$')
SWARM = re.compile(r'(^|\.)docker_swarm$')
TASK_KEYWORDS = {
    'name', 'when', 'register', 'loop', 'loop_control', 'with_items', 'with_dict', 'vars', 'no_log',
    'delegate_to', 'delegate_facts', 'run_once', 'tags', 'become', 'become_user', 'changed_when',
    'failed_when', 'until', 'retries', 'delay', 'notify', 'listen', 'ignore_errors',
    'ignore_unreachable', 'check_mode', 'diff', 'environment', 'args', 'throttle', 'timeout',
    'any_errors_fatal', 'connection', 'async', 'poll', 'module_defaults', 'collections', 'debugger',
} | set(BLOCK_KEYS)
EXPRESSION = re.compile(r'\{\{(.*?)\}\}|\{%(.*?)%\}', re.S)
IDENTIFIER = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


def secret_identifier(name):
    """Whether a name in an expression is (or holds) a credential."""
    flat = name.lower().replace('_', '')
    return ('jointoken' in flat or name == 'secrets_values'
            or name.endswith('api_token') or name.endswith('admin_password'))


def expressions(value):
    """Every Jinja expression in a task value, as text."""
    if isinstance(value, str):
        return [''.join(m) for m in EXPRESSION.findall(value)]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in expressions(k) + expressions(v)]
    if isinstance(value, list):
        return [e for item in value for e in expressions(item)]
    return []


def names_secret(value, secret_vars):
    for expression in expressions(value):
        for name in IDENTIFIER.findall(expression):
            if secret_identifier(name) or name in secret_vars:
                return True
    return False


def module_of(task):
    keys = [k for k in task if k not in TASK_KEYWORDS and not k.startswith('with_')]
    return keys[0] if keys else None


def carries_secret(task, secret_vars):
    module = module_of(task)
    if module is None or INCLUDES.search(module):
        return False
    args = task.get(module)
    if SECRET_RESULTS.search(module):
        return True
    if SWARM.search(module) and (args or {}).get('state', 'present') in ('present', 'join'):
        return True
    if module.endswith('assert') and isinstance(args, dict):
        args = {k: v for k, v in args.items() if k != 'that'}
    shown = {k: v for k, v in task.items() if k not in CONDITIONS and k != module}
    return names_secret(args, secret_vars) or names_secret(shown, secret_vars)


def offenders(tasks, where, secret_vars=frozenset(), no_log=False):
    """Names of the tasks below that carry a credential without no_log."""
    found = []
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        local_vars = task.get('vars') or {}
        inherited = set(secret_vars) | {k for k, v in local_vars.items() if names_secret(v, secret_vars)}
        quiet = no_log or task.get('no_log') is True
        if any(key in task for key in BLOCK_KEYS):
            for key in BLOCK_KEYS:
                found += offenders(task.get(key), where, inherited, quiet)
        elif not quiet and carries_secret(task, inherited):
            found.append('%s: %s' % (where, task.get('name', module_of(task))))
    return found


def task_lists(path):
    """(label, task list) of a tasks/handlers file or of each play of a playbook."""
    with open(path, encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    label = os.path.relpath(path, REPO_ROOT)
    if not isinstance(data, list):
        return []
    if any(isinstance(item, dict) and ('hosts' in item or 'import_playbook' in item) for item in data):
        return [(label, play.get(key)) for play in data if isinstance(play, dict)
                for key in ('pre_tasks', 'tasks', 'post_tasks', 'handlers')]
    return [(label, data)]


FILES = sorted(set(
    glob.glob(os.path.join(REPO_ROOT, 'roles', '*', 'tasks', '*.yml'))
    + glob.glob(os.path.join(REPO_ROOT, 'roles', '*', 'handlers', '*.yml'))
    + glob.glob(os.path.join(REPO_ROOT, 'playbooks', '*.yml'))
    + glob.glob(os.path.join(REPO_ROOT, '*.yml'))
    + glob.glob(os.path.join(REPO_ROOT, 'molecule', '**', '*.yml'), recursive=True)
    + glob.glob(os.path.join(REPO_ROOT, 'awx', '*.yml'))))


def without_no_log(value):
    """The tasks with every no_log removed, blocks included."""
    if isinstance(value, list):
        return [without_no_log(item) for item in value]
    if isinstance(value, dict):
        return {k: without_no_log(v) for k, v in value.items() if k != 'no_log'}
    return value


def test_the_lint_looks_at_the_tasks_that_carry_credentials():
    """The files and tasks this lint exists for are found and judged as carrying a credential."""
    labels = {os.path.relpath(f, REPO_ROOT) for f in FILES}
    for path in ('roles/swarm/tasks/init.yml', 'roles/swarm/tasks/join.yml',
                 'roles/pretix_bootstrap/tasks/main.yml', 'roles/loadtest/tasks/sellout.yml'):
        assert path in labels
        tasks = [task for dummy, found in task_lists(os.path.join(REPO_ROOT, path)) for task in found]
        assert offenders(without_no_log(tasks), path), '%s: no task judged to carry a credential' % path


@pytest.mark.parametrize('path', FILES, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_task_carrying_a_credential_is_no_log(path):
    found = [o for label, tasks in task_lists(path) for o in offenders(tasks, label)]
    assert not found, 'carry a credential without no_log: %s' % found


@pytest.mark.parametrize('task, carries', [
    ({'name': 'join', 'community.docker.docker_swarm': {'state': 'join', 'join_token': '{{ t }}'}}, True),
    ({'name': 'leave', 'community.docker.docker_swarm': {'state': 'absent'}}, False),
    ({'name': 'info', 'community.docker.docker_swarm_info': {'nodes': True}}, True),
    ({'name': 'share', 'ansible.builtin.set_fact': {'x': '{{ r.swarm_facts.JoinTokens }}'}}, True),
    ({'name': 'call', 'ansible.builtin.uri': {'url': 'u', 'headers': '{{ h }}'}, 'vars': {'h': 'Token {{ loadtest_api_token }}'}}, True),
    ({'name': 'check', 'ansible.builtin.assert': {'that': 'loadtest_api_token | length > 0', 'fail_msg': 'empty'}}, False),
    ({'name': 'named', 'ansible.builtin.debug': {'msg': '{{ pretix_bootstrap_api_token_name }}'}}, False),
    ({'name': 'password', 'ansible.builtin.debug': {'msg': '{{ secrets_values.pretix_admin_password }}'}}, True),
])
def test_what_counts_as_carrying_a_credential(task, carries):
    assert bool(offenders([task], 'case')) is carries


def test_a_block_passes_its_no_log_and_its_vars_down():
    inner = {'name': 'post', 'ansible.builtin.uri': {'url': 'u', 'headers': '{{ headers }}'}}
    block = {'name': 'b', 'vars': {'headers': {'Authorization': 'Token {{ loadtest_api_token }}'}}, 'block': [inner]}
    assert offenders([block], 'case') == ['case: post']
    assert offenders([dict(block, no_log=True)], 'case') == []
