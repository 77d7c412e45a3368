"""AWX configuration as code (awx/) and the execution environment it runs in.

No AWX can run here, so this checks everything that can be checked offline: the playbook's
syntax, that the data describes runnable jobs (playbooks exist, surveys are well formed and
feed variables the playbooks read, schedules parse and fire when intended) and that the
execution environment pins what the project is tested with.
"""

import datetime
import json
import os
import re
import subprocess
import sys

import pytest
import ansible_collections
import yaml
from ansible.release import __version__ as core_version

from conftest import REPO_ROOT

AWX_DIR = os.path.join(REPO_ROOT, 'awx')
SURVEY_TYPES = {'text', 'textarea', 'password', 'integer', 'float', 'multiplechoice', 'multiselect'}


def load(path):
    with open(os.path.join(REPO_ROOT, path), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


AWX_VARS = load('awx/vars.yml')
EE_DEFINITION = 'roles/execution_environment/files/execution-environment.yml'
TEMPLATES = AWX_VARS['awx_job_templates']
SURVEYED = [t for t in TEMPLATES if 'survey' in t]


def parse_rrule(text):
    """Parse an AWX rrule ("DTSTART;TZID=...:... RRULE:...") the way dateutil reads iCalendar."""
    # Imported here so a venv without it fails these tests only, not the whole collection.
    try:
        from dateutil import rrule  # pylint: disable=import-outside-toplevel
    except ImportError:
        pytest.fail('python-dateutil is not installed: requirements.txt needs python-dateutil==2.9.0.post0')
    return rrule.rrulestr(text.replace(' RRULE:', '\nRRULE:'))


def test_configure_playbook_syntax():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
                           '--syntax-check', 'awx/configure.yml'],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_job_templates_cover_the_operations():
    names = [t['name'] for t in TEMPLATES]
    assert len(names) == len(set(names))
    playbooks = [os.path.basename(t['playbook']) for t in TEMPLATES]
    assert playbooks == ['site.yml', 'scale.yml', 'heal.yml', 'autoscale.yml', 'loadtest.yml', 'teardown.yml',
                         'backup.yml', 'backup.yml', 'backup_check.yml', 'restore.yml']


def test_backups_run_nightly_and_are_checked():
    """A backup (full on Sunday, differential on the other days) every night, a check every hour."""
    by_template = {t['name']: t for t in TEMPLATES}
    nights = set()
    for schedule in AWX_VARS['awx_schedules']:
        template = by_template[schedule['job_template']]
        if schedule['enabled'] and template['playbook'].endswith('backup.yml'):
            rule = parse_rrule(schedule['rrule'])
            start = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
            for fire in rule.between(start, start + datetime.timedelta(days=7)):
                nights.add((fire.date(), template['extra_vars']['backup_type']))
    assert len(nights) == 7 and len(set(day for day, _ in nights)) == 7
    assert [kind for _, kind in nights].count('full') == 1
    checks = [s for s in AWX_VARS['awx_schedules'] if s['enabled']
              and by_template[s['job_template']]['playbook'].endswith('backup_check.yml')]
    assert len(checks) == 1
    rule = parse_rrule(checks[0]['rrule'])
    first = rule.after(datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc))
    assert (rule.after(first) - first).total_seconds() == 3600


@pytest.mark.parametrize('template', TEMPLATES, ids=[t['name'] for t in TEMPLATES])
def test_job_template_playbook_exists(template):
    assert os.path.isfile(os.path.join(REPO_ROOT, template['playbook'])), (
        '%s runs %s, which is not in the repository' % (template['name'], template['playbook']))


@pytest.mark.parametrize('template', SURVEYED, ids=[t['name'] for t in SURVEYED])
def test_survey_spec_is_valid(template):
    survey = template['survey']
    assert survey['name'] and 'description' in survey
    variables = [q['variable'] for q in survey['spec']]
    assert len(variables) == len(set(variables))
    for question in survey['spec']:
        assert question['question_name']
        assert re.match(r'^[a-z_][a-z0-9_]*$', question['variable'])
        assert question['type'] in SURVEY_TYPES
        assert isinstance(question['required'], bool)
        if question['type'] == 'integer':
            assert question['min'] <= question['default'] <= question['max']
        if question['type'] in ('multiplechoice', 'multiselect'):
            assert question['default'] in question['choices']
    playbook = os.path.join(REPO_ROOT, template['playbook'])
    if os.path.isfile(playbook):
        with open(playbook, encoding='utf-8') as handle:
            text = handle.read()
        unused = [v for v in variables if not re.search(r'\b%s\b' % v, text)]
        assert not unused, 'survey asks for %s, which %s never reads' % (unused, template['playbook'])


def test_failed_jobs_reach_a_person():
    """Every job template notifies the failure webhook, whose URL is a variable of its own."""
    notification = AWX_VARS['awx_failure_notification']
    assert notification['notification_type'] == 'webhook'
    assert notification['notification_configuration']['url'] == '{{ awx_failure_webhook_url }}'
    assert AWX_VARS['awx_failure_webhook_url'].startswith('https://')
    tasks = load('awx/configure.yml')[0]['tasks']
    job_templates = next(t for t in tasks if 'awx.awx.job_template' in t)['awx.awx.job_template']
    assert job_templates['notification_templates_error'] == ['{{ awx_failure_notification.name }}']
    assert any('awx.awx.notification_template' in t for t in tasks)


def test_scale_survey_bounds_match_the_scale_role():
    question = next(q for q in next(t for t in TEMPLATES if t['playbook'].endswith('scale.yml'))
                    ['survey']['spec'] if q['variable'] == 'replicas')
    defaults = load('roles/scale/defaults/main.yml')
    assert question['min'] == defaults['scale_min_replicas']
    assert question['max'] == defaults['scale_max_replicas']


@pytest.mark.parametrize('schedule', AWX_VARS['awx_schedules'], ids=lambda s: s['name'])
def test_schedule_parses_and_targets_a_template(schedule):
    assert schedule['job_template'] in [t['name'] for t in TEMPLATES]
    assert isinstance(schedule['enabled'], bool)
    rule = parse_rrule(schedule['rrule'])
    start = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
    assert rule.after(start) is not None


def test_heal_runs_every_five_minutes():
    heal = [s for s in AWX_VARS['awx_schedules'] if s['enabled']
            and next(t for t in TEMPLATES if t['name'] == s['job_template'])['playbook'].endswith('heal.yml')]
    assert len(heal) == 1
    rule = parse_rrule(heal[0]['rrule'])
    start = datetime.datetime(2026, 6, 1, 12, 1, tzinfo=datetime.timezone.utc)
    first = rule.after(start)
    second = rule.after(first)
    third = rule.after(second)
    assert [(second - first).total_seconds(), (third - second).total_seconds()] == [300, 300]


def test_autoscale_runs_every_minute_once_enabled():
    """Off by default: without a Prometheus URL in the inventory every run would fail."""
    by_template = {t['name']: t for t in TEMPLATES}
    [schedule] = [s for s in AWX_VARS['awx_schedules']
                  if by_template[s['job_template']]['playbook'].endswith('autoscale.yml')]
    assert schedule['enabled'] is False
    rule = parse_rrule(schedule['rrule'])
    first = rule.after(datetime.datetime(2026, 6, 1, 12, 0, 30, tzinfo=datetime.timezone.utc))
    assert (rule.after(first) - first).total_seconds() == 60
    # A run waits for new replicas at most autoscale_timeout; the job's limit must leave room for it.
    defaults = load('roles/autoscale/defaults/main.yml')
    assert by_template[schedule['job_template']]['timeout'] > defaults['autoscale_timeout']


def installed_collection_version(fqcn):
    """Version of a collection bundled with the ansible package in the venv."""
    namespace, name = fqcn.split('.')
    for base in ansible_collections.__path__:
        manifest = os.path.join(base, namespace, name, 'MANIFEST.json')
        if os.path.isfile(manifest):
            with open(manifest, encoding='utf-8') as handle:
                return json.load(handle)['collection_info']['version']
    return None


def test_execution_environment_pins_what_the_project_tests():
    ee = load(EE_DEFINITION)
    assert ee['version'] == 3
    deps = ee['dependencies']
    assert deps['ansible_core']['package_pip'] == 'ansible-core==%s' % core_version
    for collection in deps['galaxy']['collections']:
        assert collection['version'] == installed_collection_version(collection['name']), collection
    galaxy = load('galaxy.yml')
    assert set(galaxy['dependencies']) <= set(c['name'] for c in deps['galaxy']['collections'])
    with open(os.path.join(REPO_ROOT, 'requirements.txt'), encoding='utf-8') as handle:
        pins = dict(line.strip().split('==') for line in handle
                    if '==' in line and not line.startswith('#'))
    for requirement in deps['python']:
        name, version = requirement.split('==')
        if name in pins:
            assert pins[name] == version, requirement
    assert any(r.startswith('docker==') for r in deps['python'])
    assert deps['ansible_runner']['package_pip'] == 'ansible-runner==' + pins['ansible-runner']


def test_execution_environment_holds_every_collection_dependency():
    """The role copies only the listed collections, so each one's dependencies must be listed too."""
    collections = {c['name'] for c in load(EE_DEFINITION)['dependencies']['galaxy']['collections']}
    for name in collections:
        namespace, short = name.split('.')
        for base in ansible_collections.__path__:
            manifest = os.path.join(base, namespace, short, 'MANIFEST.json')
            if os.path.isfile(manifest):
                with open(manifest, encoding='utf-8') as handle:
                    needed = json.load(handle)['collection_info']['dependencies'] or {}
                assert set(needed) <= collections, (name, needed)


def test_project_collection_requirements_are_galaxy_dependencies():
    """AWX's project sync installs collections/requirements.yml: the same as galaxy.yml's."""
    listed = {c['name'] for c in load('collections/requirements.yml')['collections']}
    assert listed == set(load('galaxy.yml')['dependencies'])
