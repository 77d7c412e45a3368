"""loadtest.yml against the deployed HA stack: a short web-checkout run and a small sell-out.

Low rates on purpose: this proves the role end to end on the real stack (Locust containers on
the load node, real checkouts through nginx/pretix/pgpool/HAProxy, reports fetched, containers
removed). The capacity numbers come from the profiles and benchmarks/ha_vs_bare.sh, not from here.
"""

import glob
import json
import os

import docker

from conftest import run_playbook
from test_buy_ticket import read_vault

PREFIX = 'bxtest-lte2e'


def loadtest(tmp_path, *extra):
    args = ['loadtest.yml', '-e', 'loadtest_name_prefix=%s' % PREFIX, '-e', 'loadtest_master_port=15558',
            '-e', 'loadtest_workers=1', '-e', 'loadtest_reports_dir=%s' % tmp_path]
    for item in extra:
        args += ['-e', item]
    return run_playbook(*args, timeout=1800)


def summary(tmp_path):
    [path] = glob.glob(str(tmp_path / '*' / 'summary.json'))
    with open(path, encoding='utf-8') as handle:
        return json.load(handle), os.path.dirname(path)


def load_containers():
    client = docker.from_env()
    try:
        return [c.name for c in client.containers.list(all=True) if c.name.startswith(PREFIX)]
    finally:
        client.close()


def test_web_checkouts_through_the_ha_stack(tmp_path):
    rc, output = loadtest(tmp_path, 'loadtest_scenario=web', 'loadtest_target_rate=40',
                          'loadtest_profile=0.5x', 'loadtest_duration=45', 'loadtest_fail_on_breach=false')

    assert rc == 0, output[-4000:]
    result, report_dir = summary(tmp_path)
    [run] = result['runs']
    assert run['purchases'] >= 3, run
    assert os.path.getsize(os.path.join(report_dir, 'web-0.5x.html')) > 10000
    assert os.path.exists(os.path.join(report_dir, 'web-0.5x_stats.csv'))
    assert 'verdict:' in output
    assert load_containers() == []


def test_sellout_sells_exactly_the_quota(tmp_path):
    rc, output = loadtest(tmp_path, 'loadtest_mode=sellout', 'loadtest_scenario=api',
                          'loadtest_api_token=%s' % read_vault('pretix_api_token'), 'loadtest_sellout_quota=20',
                          'loadtest_sellout_rate=240')

    assert rc == 0, output[-4000:]
    sellout = summary(tmp_path)[0]['sellout']
    assert int(sellout['sold']) == 20, sellout
    assert int(sellout['purchases_reported']) == 20, sellout
    assert int(sellout['attempts']) > 20, sellout
    assert load_containers() == []
