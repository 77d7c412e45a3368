"""The in-swarm autoscaler without Docker: its program (roles/autoscale/files/autoscaler.py) - the
config it reads, one round of its loop, its exit on SIGTERM as a real process - and the variables
the roles derive for it (the JSON config, the replica count the pretix role keeps), rendered by
Ansible itself."""

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO_ROOT

PROGRAM = os.path.join(REPO_ROOT, 'roles', 'autoscale', 'files', 'autoscaler.py')
SPEC = importlib.util.spec_from_file_location('autoscaler', PROGRAM)
autoscaler = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(autoscaler)

RULE = dict(service='pretix-web', query='avg(up)', target=0.7, min=2, max=10)


def write_config(tmp_path, **overrides):
    config = dict(dict(interval=15, prometheus=dict(url='http://prometheus:9090', timeout=5), rules=[RULE]),
                  **overrides)
    path = tmp_path / 'autoscaler.json'
    path.write_text(json.dumps(config))
    return str(path)


def lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_rule_becomes_the_modules_params_with_hpa_defaults(tmp_path):
    config, problems = autoscaler.load_config(write_config(tmp_path, stack='shop'))
    assert problems == [] and config['interval'] == 15
    assert config['rules'] == [dict(
        name='pretix-web', stack='shop', query='avg(up)', target=0.7, min_replicas=2, max_replicas=10,
        tolerance=0.1, scale_up_max_step=4, scale_up_max_percent=100, scale_down_stabilization=300,
        prometheus_url='http://prometheus:9090', prometheus_timeout=5, prometheus_validate_certs=True,
        prometheus_ca_path=None, prometheus_username=None, prometheus_password=None,
        wait=False, wait_timeout=0)]


def test_rules_that_cannot_work_are_left_out_with_the_reason(tmp_path):
    rules = [RULE, dict(RULE, service='pretix-worker', min=5, max=3), dict(service='nginx', query='x'),
             dict(RULE, service='cron', target='high')]
    config, problems = autoscaler.load_config(write_config(tmp_path, rules=rules))
    assert [params['name'] for params in config['rules']] == ['pretix-web']
    assert 'pretix-worker: min_replicas (5) must not be above max_replicas (3)' in problems[0]
    assert problems[1] == 'the rule for nginx has no target, max; the rule is left out.'
    assert 'the rule for cron has a setting that is no number' in problems[2]


@pytest.mark.parametrize('content, message', [
    ('{"rules": []}', 'prometheus.url is missing'),
    ('{"interval": 0, "prometheus": {"url": "http://p:9090"}}', 'interval must be a number of seconds above 0'),
    ('[1]', 'the config must be a JSON object'),
    ('{', 'Expecting'),
])
def test_a_config_that_cannot_be_used_stops_the_program_with_status_2(tmp_path, capsys, content, message):
    path = tmp_path / 'bad.json'
    path.write_text(content)
    assert autoscaler.main([str(path)]) == 2
    [line] = lines(capsys)
    assert line['event'] == 'error' and message in line['error']


class Recorder:
    """Stands in for autoscale_service(): records the calls, answers as the rule's name says."""

    def __init__(self):
        self.calls = []

    def __call__(self, client, params, log, warn, check_mode):
        self.calls.append((client, params['name'], check_mode))
        if params['name'] == 'down':
            raise autoscaler.AutoscaleError('Cannot reach Prometheus at http://prometheus:9090: refused.')
        if params['name'] == 'gone':
            raise autoscaler.SwarmError('Unknown service(s): gone.')
        if params['name'] == 'bug':
            raise KeyError('Spec')
        warn('label unreadable')
        log(json.dumps(dict(name=params['name'], applied_replicas=3, reason='2 -> 3')))


def test_one_round_reports_every_rule_and_goes_on_after_errors(tmp_path, capsys):
    rules = [dict(name=name) for name in ('down', 'gone', 'bug', 'web')]
    connects = []
    run = Recorder()
    scaler = autoscaler.Autoscaler(dict(interval=15, prometheus=dict(url='u', timeout=5), rules=rules),
                                   connect=lambda: connects.append(1) or 'client%d' % len(connects), run=run,
                                   heartbeat=str(tmp_path / 'beat'))
    scaler.round(threading.Event())

    # Wait false is in the params; here: never check mode, and a new client after a Docker error.
    assert run.calls == [('client1', 'down', False), ('client1', 'gone', False),
                         ('client2', 'bug', False), ('client3', 'web', False)]
    out = lines(capsys)
    assert [(line['event'], line.get('name')) for line in out] == [
        ('error', 'down'), ('error', 'gone'), ('error', 'bug'), ('warning', 'web'), ('decision', 'web')]
    assert out[0]['error'].startswith('Cannot reach Prometheus')
    assert out[2]['error'] == "unexpected KeyError: 'Spec'" and 'Traceback' in out[2]['traceback']
    assert out[4] == dict(event='decision', name='web', applied_replicas=3, reason='2 -> 3')
    assert autoscaler.healthcheck(scaler.config, heartbeat=str(tmp_path / 'beat')) == 0


def test_a_stale_or_missing_heartbeat_is_unhealthy(tmp_path):
    config = dict(interval=15, prometheus=dict(url='u', timeout=10), rules=[])
    beat = tmp_path / 'beat'
    assert autoscaler.healthcheck(config, heartbeat=str(beat)) == 1
    beat.write_text('0\n')
    old = time.time() - autoscaler.heartbeat_limit(config) - 5
    os.utime(beat, (old, old))
    assert autoscaler.healthcheck(config, heartbeat=str(beat)) == 1


def test_a_stop_ends_the_round_before_the_next_rule(tmp_path):
    stop = threading.Event()
    calls = []

    def run(client, params, log, warn, check_mode):
        calls.append(params['name'])
        stop.set()

    scaler = autoscaler.Autoscaler(dict(interval=15, prometheus=dict(url='u', timeout=5),
                                        rules=[dict(name='a'), dict(name='b')]),
                                   connect=lambda: None, run=run, heartbeat=str(tmp_path / 'beat'))
    scaler.loop(stop)
    assert calls == ['a']


def test_the_program_keeps_going_without_docker_and_exits_0_on_sigterm(tmp_path):
    """A real process: no Docker engine at DOCKER_HOST, no Prometheus; it logs and goes on."""
    env = dict(os.environ, DOCKER_HOST='unix://%s' % (tmp_path / 'no.sock'),
               AUTOSCALER_HEARTBEAT=str(tmp_path / 'beat'), PYTHONUNBUFFERED='1',
               PYTHONPATH=os.path.join(REPO_ROOT, 'collections'))
    proc = subprocess.Popen([sys.executable, PROGRAM, write_config(tmp_path, interval=0.2)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / 'beat').exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a few more rounds
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]['event'] == 'start' and events[0]['services'] == ['pretix-web']
    errors = [event for event in events if event['event'] == 'error']
    assert len(errors) >= 2 and all('Cannot connect to the Docker engine' in e['error'] for e in errors)
    assert events[-1] == dict(event='stop')


RENDER = '''
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Load the shared names and the roles' defaults and vars
      ansible.builtin.include_vars: "{{ item }}"
      loop: %(var_files)s
    - name: Write the values
      ansible.builtin.copy:
        content: "{{ {'config': autoscale_service_config, 'web': pretix_web_deploy_replicas | int,
                      'labels': pretix_web_autoscaler_labels,
                      'scale_rules': scale_autoscale_rules | map(attribute='service')} | to_json }}"
        dest: %(dest)s
        mode: "0644"
'''


def render(tmp_path, extra_vars):
    """The autoscaler's JSON config and pretix web's deployed count and labels, as Ansible derives them."""
    var_files = [os.path.join(REPO_ROOT, 'roles', *parts, 'main.yml') for parts in (
        ('boxoffice_defaults', 'defaults'), ('autoscale', 'defaults'), ('autoscale', 'vars'),
        ('pretix', 'defaults'), ('pretix', 'vars'), ('scale', 'defaults'), ('scale', 'vars'))]
    dest = tmp_path / 'values.json'
    playbook = tmp_path / 'render.yml'
    playbook.write_text(RENDER % {'var_files': json.dumps(var_files), 'dest': json.dumps(str(dest))})
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), str(playbook),
                           '-i', 'localhost,', '-e', 'ansible_python_interpreter=%s' % sys.executable,
                           '-e', json.dumps(extra_vars)],
                          cwd=REPO_ROOT, env=dict(os.environ, ANSIBLE_NOCOLOR='1'), capture_output=True,
                          text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(dest.read_text())


def web_info(replicas, labels=None):
    """What docker_swarm_service_info registers for pretix-web."""
    return dict(exists=True, service=dict(Spec=dict(Name='pretix-web', Labels=labels or {},
                                                    Mode=dict(Replicated=dict(Replicas=replicas)))))


def test_the_roles_config_is_what_the_program_reads(tmp_path):
    values = render(tmp_path, {'autoscale_rules': [dict(RULE, scale_down_stabilization=600)],
                               'autoscale_tolerance': 0.2})
    config = values['config']
    assert config['interval'] == 15 and config['prometheus'] == dict(url='http://prometheus:9090', timeout=10)
    assert config['rules'] == [dict(RULE, tolerance=0.2, scale_up_max_step=4, scale_up_max_percent=100,
                                    scale_down_stabilization=600)]
    path = tmp_path / 'autoscaler.json'
    path.write_text(json.dumps(config))
    loaded, problems = autoscaler.load_config(str(path))
    assert problems == [] and loaded['rules'][0]['scale_down_stabilization'] == 600


HISTORY = {'boxoffice.autoscale.recommendations': '[[1767225600,7]]', 'other': 'x'}


@pytest.mark.parametrize('extra, expected, labels', [
    # The autoscaler's count is kept, and its history label.
    ({'pretix_web_current': web_info(7, HISTORY)}, 7, {'boxoffice.autoscale.recommendations': '[[1767225600,7]]'}),
    # Clamped to the default rule's bounds (2..10).
    ({'pretix_web_current': web_info(14)}, 10, {}),
    ({'pretix_web_current': web_info(1)}, 2, {}),
    # Stopped, or not there yet: the deployed count.
    ({'pretix_web_current': web_info(0)}, 2, {}),
    ({'pretix_web_current': {'exists': False, 'service': None}, 'pretix_web_replicas': 3}, 3, {}),
    # The autoscaler off, or no rule for web: the deployed count, no label kept.
    ({'pretix_web_current': web_info(7, HISTORY), 'autoscale_service_enabled': False}, 2, {}),
    ({'pretix_web_current': web_info(7, HISTORY), 'boxoffice_defaults_monitoring_enabled': False}, 2, {}),
    ({'pretix_web_current': web_info(7, HISTORY), 'autoscale_rules': [dict(RULE, service='pretix-worker')]}, 2, {}),
    ({'pretix_web_current': web_info(7), 'autoscale_stack': 'shop'}, 2, {}),
    ({'pretix_web_current': web_info(7), 'autoscale_rules': [dict(RULE, min=8, max=9)]}, 8, {}),
])
def test_pretix_keeps_the_web_count_the_autoscaler_set(tmp_path, extra, expected, labels):
    values = render(tmp_path, extra)
    assert (values['web'], values['labels']) == (expected, labels)


@pytest.mark.parametrize('extra, expected', [
    ({}, ['pretix-web']),
    ({'service': 'nginx'}, []),
    ({'service': ['nginx', 'pretix-web']}, ['pretix-web']),
    ({'scale_stack': 'shop', 'autoscale_stack': 'shop'}, ['pretix-web']),
    ({'scale_stack': 'shop'}, []),
    ({'autoscale_service_enabled': False}, []),
])
def test_scale_finds_the_rule_of_an_autoscaled_service(tmp_path, extra, expected):
    assert render(tmp_path, extra)['scale_rules'] == expected


def test_pretix_before_it_read_the_service_deploys_its_own_count(tmp_path):
    assert render(tmp_path, {})['web'] == 2


def test_emit_is_one_json_line(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', out)
    autoscaler.emit('warning', name='web', warning='a\nb')
    assert out.getvalue().count('\n') == 1
    assert json.loads(out.getvalue()) == dict(event='warning', name='web', warning='a\nb')
