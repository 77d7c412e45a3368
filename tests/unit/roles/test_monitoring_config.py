"""The monitoring role's configuration as Prometheus and Alertmanager read it: rendered with Ansible
from the role's templates and defaults, then checked with Prometheus' own tools - promtool for the
scrape configuration and the rules (syntax, PromQL, and rule unit tests that feed series and
expect alerts), amtool for Alertmanager's routing - and every alert's runbook found in
docs/alerts.md. No Docker needed.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages, fetched
with `apt-get download` and unpacked into a temporary directory, because installing the packages
would start their services on the machine. Only when no Debian mirror answers are the tests that
need them skipped, and the skip says so.
"""

import re
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO_ROOT
from rendering import render

TEMPLATES = ['prometheus.yml.j2', 'rules.yml.j2', 'alertmanager.yml.j2', 'blackbox.yml.j2',
             'postgres_queries.yml.j2']
WEBHOOK = 'http://alert-receiver:8080/hook'


def download_tools(work):
    """promtool and amtool unpacked from Debian's packages into work, or None with the reason."""
    command = ['apt-get', 'download', 'prometheus', 'prometheus-alertmanager']
    proc = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        # A machine whose package lists were never fetched knows no package yet.
        subprocess.run(['apt-get', 'update', '-qq'], capture_output=True, check=False, timeout=600)
        proc = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        return None, proc.stderr.strip()[-500:]
    for deb in work.glob('*.deb'):
        subprocess.run(['dpkg-deb', '-x', str(deb), str(work / 'root')], check=True, timeout=300)
    return {name: str(work / 'root' / 'usr' / 'bin' / name) for name in ('promtool', 'amtool')}, None


@pytest.fixture(scope='module')
def tools(tmp_path_factory):
    """{'promtool': path, 'amtool': path}: from PATH, else from Debian's packages."""
    found = {name: shutil.which(name) for name in ('promtool', 'amtool')}
    if all(found.values()):
        return found
    if not shutil.which('apt-get'):
        pytest.skip('SKIPPED, NOT CHECKED: promtool/amtool are not on PATH and there is no apt-get to fetch them')
    paths, error = download_tools(tmp_path_factory.mktemp('prometheus-debs'))
    if paths is None:
        pytest.skip('SKIPPED, NOT CHECKED: promtool/amtool could not be fetched from the Debian mirror: %s' % error)
    return paths


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    """The role's files rendered with its defaults and a webhook receiver, in one directory."""
    work = tmp_path_factory.mktemp('monitoring')
    render(work, 'monitoring', TEMPLATES, extra_vars={'monitoring_alert_webhook_url': WEBHOOK})
    return work


def run(tool, *args, cwd=None):
    proc = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def alerts(rules_text):
    return [rule for group in yaml.safe_load(rules_text)['groups'] for rule in group['rules'] if 'alert' in rule]


def test_prometheus_configuration_is_valid(tools, rendered):
    # File references (rules, the password file) exist only inside the task.
    run(tools['promtool'], 'check', 'config', '--syntax-only', str(rendered / 'prometheus.yml.j2'))


def test_rules_are_valid(tools, rendered):
    assert 'SUCCESS' in run(tools['promtool'], 'check', 'rules', str(rendered / 'rules.yml.j2'))


@pytest.mark.parametrize('receiver', ['webhook', 'email', 'webhook without a URL'])
def test_alertmanager_configuration_is_valid(tools, tmp_path, receiver):
    extra = {'webhook': {'monitoring_alert_webhook_url': WEBHOOK},
             'email': {'monitoring_alert_receiver': 'email', 'monitoring_alert_email': {
                 'to': 'ops@example.org', 'from': 'alerts@example.org', 'smarthost': 'mail.example.org:587',
                 'auth_username': 'alerts', 'auth_password': 'secret', 'require_tls': True}},
             'webhook without a URL': {}}[receiver]
    text = render(tmp_path, 'monitoring', ['alertmanager.yml.j2'], extra_vars=extra)['alertmanager.yml.j2']
    run(tools['amtool'], 'check-config', str(tmp_path / 'alertmanager.yml.j2'))
    receivers = yaml.safe_load(text)['receivers']
    assert [r['name'] for r in receivers] == ['operator']
    if receiver == 'webhook':
        assert receivers[0]['webhook_configs'] == [{'url': WEBHOOK, 'send_resolved': True}]
    elif receiver == 'email':
        assert receivers[0]['email_configs'][0]['to'] == 'ops@example.org'
    else:
        assert set(receivers[0]) == {'name'}


# Each case: input series (promtool's notation), then at each evaluation time the alerts expected,
# as (labels, the value their annotations show), [] for none. A series missing altogether must
# alert as well as one that reports the fault.
RULE_TESTS = [
    # The primary stops being primary: after the rule's minute the shop is told.
    ('PostgresNoPrimary',
     {'boxoffice_pg_is_primary{member="pg-0"}': '1x4 0x20', 'boxoffice_pg_is_primary{member="pg-1"}': '0x24'},
     [('1m', []), ('3m', [({'severity': 'critical'}, '0')])]),
    ('PostgresMultiplePrimaries',
     {'boxoffice_pg_is_primary{member="pg-0"}': '1x20', 'boxoffice_pg_is_primary{member="pg-1"}': '0x4 1x16'},
     [('1m', []), ('3m', [({'severity': 'critical'}, '2')])]),
    # No Redis series at all (redis-exporter down) is no master, not "no data".
    ('RedisMasterCount', {'up{job="prometheus"}': '1x20'}, [('1m', [({'severity': 'critical'}, '0')])]),
    ('RedisSentinelQuorumLost',
     {'redis_up{job="sentinel", instance="sentinel-0"}': '1x20',
      'redis_up{job="sentinel", instance="sentinel-1"}': '1x4 0x16',
      'redis_up{job="sentinel", instance="sentinel-2"}': '0x20'},
     [('30s', []), ('3m', [({'severity': 'critical'}, '1')])]),
    # Two tasks wanted, one running: the one still starting counts as missing.
    ('ServiceUnderReplicas',
     {'up{job="swarm-tasks", service="pretix-web", instance="a", task_state="running"}': '1x40',
      'up{job="swarm-tasks", service="pretix-web", instance="b", task_state="starting"}': '1x40',
      'up{job="swarm-tasks", service="pgpool", instance="c", task_state="running"}': '1x40'},
     [('1m', []), ('5m', [({'severity': 'warning', 'service': 'pretix-web'}, '1')])]),
    # 60 errors in 660 answers a scrape: 9.1 %.
    ('PretixErrorRatio',
     {'pretix_view_duration_seconds_count{status_code="200", url_name="presale:event.index"}': '0+600x60',
      'pretix_view_duration_seconds_count{status_code="500", url_name="presale:event.index"}': '0+60x60'},
     [('3m', []), ('12m', [({'severity': 'critical'}, '9.091%')])]),
]


def expand(annotations, labels, value):
    """The annotations as Prometheus expands them for an alert with these labels and value."""
    return {key: re.sub(r'\{\{ \$value( \| \w+)? \}\}', value,
                        re.sub(r'\{\{ \$labels\.(\w+) \}\}', lambda m: labels.get(m.group(1), ''), text))
            for key, text in annotations.items()}


def test_alerts_fire_on_the_faults_they_name(tools, rendered):
    rules = {rule['alert']: rule for rule in alerts((rendered / 'rules.yml.j2').read_text())}
    tests = [{'interval': '15s',
              'input_series': [{'series': s, 'values': v} for s, v in series.items()],
              'alert_rule_test': [{'eval_time': eval_time, 'alertname': name, 'exp_alerts': [
                  {'exp_labels': labels, 'exp_annotations': expand(rules[name]['annotations'], labels, value)}
                  for labels, value in expected]}]}
             for name, series, expectations in RULE_TESTS for eval_time, expected in expectations]
    (rendered / 'rules_test.yml').write_text(yaml.safe_dump(
        {'rule_files': ['rules.yml.j2'], 'evaluation_interval': '15s', 'tests': tests}))
    run(tools['promtool'], 'test', 'rules', 'rules_test.yml', cwd=rendered)


def test_every_alert_has_a_severity_and_a_runbook_section(rendered):
    with open('%s/docs/alerts.md' % REPO_ROOT, encoding='utf-8') as handle:
        anchors = {re.sub(r'[^a-z0-9-]', '', line[3:].strip().lower().replace(' ', '-'))
                   for line in handle if line.startswith('## ')}
    rules = alerts((rendered / 'rules.yml.j2').read_text())
    assert len(rules) >= 18
    for rule in rules:
        assert rule['labels']['severity'] in ('critical', 'warning'), rule['alert']
        page, dummy, anchor = rule['annotations']['runbook'].partition('#')
        assert page == 'docs/alerts.md' and anchor in anchors, (rule['alert'], anchor)


def test_the_synchronous_standby_rule_follows_the_quorum(tmp_path):
    text = render(tmp_path, 'monitoring', ['rules.yml.j2'],
                  extra_vars={'monitoring_postgres_synchronous_standbys': 0})['rules.yml.j2']
    assert 'PostgresSynchronousStandbyMissing' not in [r['alert'] for r in alerts(text)]


def test_scrape_jobs(rendered, tmp_path):
    jobs = {job['job_name']: job for job in yaml.safe_load((rendered / 'prometheus.yml.j2').read_text())['scrape_configs']}
    assert set(jobs) == {'prometheus', 'alertmanager', 'swarm', 'swarm-tasks', 'pretix', 'redis', 'sentinel', 'shop'}
    assert jobs['pretix']['basic_auth']['password_file'] == '/run/secrets/pretix_metrics_passphrase'
    keys = jobs['redis']['params']['check-single-keys'][0].split(',')
    assert 'db1=checkout' in keys and 'db1=checkout:8' in keys
    # The engines' metrics only when their port is given (enabling them restarts the engines).
    text = render(tmp_path, 'monitoring', ['prometheus.yml.j2'],
                  extra_vars={'monitoring_docker_engine_metrics_port': 9323})['prometheus.yml.j2']
    engine = [job for job in yaml.safe_load(text)['scrape_configs'] if job['job_name'] == 'docker-engine']
    assert engine and engine[0]['dockerswarm_sd_configs'][0]['port'] == 9323
