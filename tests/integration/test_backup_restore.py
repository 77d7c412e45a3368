"""Backups and restores of the deployed stack (issue 16): real pgBackRest, real restores.

In CI (cheap, nothing restored): every refusal of restore.yml (no confirmation, an empty
repository, a restore point before the oldest backup, a point in the future) and of teardown.yml
(data deletion without a recent backup) changes nothing in the running stack; backup.yml takes a
backup and backup_check.yml passes on it and fails on a stanza without backups.

Slow (`-m slow`): orders around a backup, a restore to the latest state (every order) and a
point-in-time restore between two orders (the first kept, the second gone), each followed by
full redundancy and a sale; teardown.yml without data deletion (volumes kept, the redeploy finds
the orders); a failover during archiving followed by a backup that restores.
The disaster drill (load, backup, every data volume deleted, redeploy, restore) is
tests/integration/test_backup_drill.py.
"""

import datetime
import os
import re
import sys
import time
import uuid

import docker
import pytest

from conftest import REPO_ROOT, run_playbook

sys.path.insert(0, os.path.join(REPO_ROOT, 'tests', 'chaos'))
import chaoslib  # noqa: E402  pylint: disable=wrong-import-position

PG_NODES = chaoslib.PG_NODES
PLAYBOOK_TIMEOUT = 1800
# Services whose spec must not change when a playbook refuses.
WATCHED = ('pg-0', 'pg-1', 'pg-2', 'pgpool', 'pretix-web', 'pretix-worker', 'pretix-cron', 'nginx')


def utc_text(ts):
    # No space: `-e key=value` ends a value at a space.
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S+00:00')


@pytest.fixture(scope='module')
def shop(docker_client):
    """The local stack, its API token, and a product of its own with an unlimited quota."""
    for service in WATCHED:
        try:
            docker_client.api.inspect_service(service)
        except docker.errors.NotFound:
            pytest.fail('%s is not deployed: run `ansible-playbook site.yml` first' % service)
    target = chaoslib.local_target(docker_client)
    token = chaoslib.e2e.read_vault('pretix_api_token')
    item = chaoslib.create_chaos_item(target, token)
    yield target, token, item
    chaoslib.deactivate_item(target, token, item)


def service_state(client):
    """What a refused playbook must leave as it is: each service's spec (its version changes with
    any scale or update) and replicas. Task containers are not compared: Swarm replaces a task
    whose healthcheck fails on a loaded machine without any playbook."""
    state = {}
    for name in WATCHED:
        spec = client.api.inspect_service(name)
        state[name] = (spec['Version']['Index'], spec['Spec']['Mode'].get('Replicated', {}).get('Replicas'))
    return state


def place_order(target, token, item):
    """One API order; returns (code, time the shop confirmed it)."""
    s = target.session(token)
    try:
        for _ in range(30):
            response = s.post(target.api + 'orders/', timeout=30, json={
                'email': 'backup-%s@example.org' % uuid.uuid4().hex[:10], 'locale': 'en',
                'sales_channel': 'web', 'payment_provider': 'manual', 'positions': [{'item': item}]})
            if response.status_code == 201:
                return response.json()['code'], time.time()
            time.sleep(2)
        raise AssertionError('the shop did not take an order: HTTP %d %s' % (response.status_code, response.text[:200]))
    finally:
        s.close()


def orders_in_db(target, codes):
    """The codes the current primary has (PostgreSQL only, never a cache)."""
    primaries = chaoslib.pg_primaries(target)
    assert len(primaries) == 1, 'primaries: %s' % primaries
    code, out = target.engine.exec(target.task(primaries[0]), [
        'psql', '-XAtq', '-d', 'pretix', '-c',
        "SELECT code FROM pretixbase_order WHERE code = ANY('{%s}')" % ','.join(codes)], user='postgres')
    assert code == 0, out
    return set(out.split())


def backup(*extra):
    rc, out = run_playbook('backup.yml', *extra, timeout=PLAYBOOK_TIMEOUT)
    assert rc == 0, out[-4000:]
    out = ' '.join(out.split())  # the report is folded over lines
    label = re.search(r'Backup (\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?) ', out)
    assert label, out[-3000:]
    return label.group(1), out


def restore(*extra):
    started = time.time()
    rc, out = run_playbook('restore.yml', '-e', 'restore_confirm=true', *extra, timeout=PLAYBOOK_TIMEOUT)
    assert rc == 0, out[-5000:]
    return time.time() - started, out


def back_to_full_redundancy(target, token, item):
    """Full redundancy after a restore, then a sale; (seconds to redundancy, seconds to the sale)."""
    start = time.time()
    took, problems = chaoslib.wait_full_redundancy(target, timeout=600, poll=2)
    assert took is not None, 'not fully redundant after the restore: %s' % problems
    code, confirmed = place_order(target, token, item)
    assert code in orders_in_db(target, [code])
    return took, confirmed - start


# ------------------------------------------------------------------------------------------
# Refusals: each leaves the running stack exactly as it was.


def test_restore_without_confirmation_changes_nothing(shop, docker_client):
    before = service_state(docker_client)
    rc, out = run_playbook('restore.yml', timeout=300)
    assert rc != 0
    assert 'Confirm with -e restore_confirm=true' in out
    assert 'Nothing was changed' in out
    assert service_state(docker_client) == before


def test_restore_from_an_empty_repository_changes_nothing(shop, docker_client):
    volume = 'bxtest-empty-repo-%s' % uuid.uuid4().hex[:8]
    before = service_state(docker_client)
    try:
        rc, out = run_playbook('restore.yml', '-e', 'restore_confirm=true', '-e', 'backup_repo_volume=' + volume,
                               timeout=300)
    finally:
        try:
            docker_client.api.remove_volume(volume, force=True)
        except docker.errors.NotFound:
            pass
    assert rc != 0
    assert 'holds no backup' in out and 'Nothing was changed' in out, out[-3000:]
    assert service_state(docker_client) == before


def test_restore_point_in_the_future_changes_nothing(shop, docker_client):
    before = service_state(docker_client)
    rc, out = run_playbook('restore.yml', '-e', 'restore_confirm=true',
                           '-e', 'restore_target_time=%s' % utc_text(time.time() + 3600), timeout=300)
    assert rc != 0
    assert 'is in the future' in out and 'Nothing was changed' in out, out[-3000:]
    assert service_state(docker_client) == before


@pytest.fixture(scope='module')
def first_backup(shop):
    """A full backup of the running stack, with one order placed before it."""
    target, token, item = shop
    code, confirmed = place_order(target, token, item)
    label, out = backup()
    return {'label': label, 'order': code, 'order_confirmed': confirmed, 'output': out}


def test_backup_reports_label_size_and_data_archive(first_backup):
    out = first_backup['output']
    assert re.search(r'database [0-9.]+ MiB, [0-9.]+ MiB stored', out), out[-2000:]
    assert re.search(r'/data archive [0-9]+ bytes', out), out[-2000:]


def test_restore_point_before_the_oldest_backup_changes_nothing(shop, first_backup, docker_client):
    before = service_state(docker_client)
    rc, out = run_playbook('restore.yml', '-e', 'restore_confirm=true',
                           '-e', 'restore_target_time=2001-01-01T00:00:00+00:00', timeout=300)
    assert rc != 0
    assert 'before the end of the oldest backup' in out and 'Nothing was changed' in out, out[-3000:]
    assert service_state(docker_client) == before


def test_backup_check_passes_after_a_backup(first_backup):
    rc, out = run_playbook('playbooks/backup_check.yml', timeout=300)
    assert rc == 0, out[-3000:]
    assert 'Newest backup %s' % first_backup['label'] in out or 'Newest backup' in out


def test_backup_check_fails_without_a_backup(first_backup):
    rc, out = run_playbook('playbooks/backup_check.yml', '-e', 'backup_stanza=bxtest-none', timeout=300)
    assert rc != 0
    assert 'holds no backup' in out, out[-3000:]


def test_teardown_refuses_data_deletion_without_a_recent_backup(shop, first_backup, docker_client):
    before = service_state(docker_client)
    volumes = set(v['Name'] for v in docker_client.api.volumes()['Volumes'] or [])
    rc, out = run_playbook('playbooks/teardown.yml', '-e', 'teardown_delete_data=true',
                           '-e', 'backup_stanza=bxtest-none', timeout=300)
    assert rc != 0
    assert 'holds no backup' in out and 'teardown_skip_backup_check=true' in out, out[-3000:]
    assert service_state(docker_client) == before
    assert volumes <= set(v['Name'] for v in docker_client.api.volumes()['Volumes'] or [])


# ------------------------------------------------------------------------------------------
# Restores (slow): every order to the latest state; a point in time between two orders.


@pytest.mark.slow
def test_restore_latest_then_point_in_time(shop, first_backup):
    target, token, item = shop
    first = first_backup['order']
    second, second_at = place_order(target, token, item)
    time.sleep(2)
    point = time.time()
    time.sleep(2)
    third, _ = place_order(target, token, item)
    codes = [first, second, third]

    took, out = restore()
    present = orders_in_db(target, codes)
    redundancy_s, sale_s = back_to_full_redundancy(target, token, item)
    print('restore to latest: %.0f s (playbook), full redundancy %.0f s later, first sale %.0f s later; '
          'orders present %s of %s' % (took, redundancy_s, sale_s, sorted(present), codes))
    assert present == set(codes), 'a restore to the latest state lost %s' % sorted(set(codes) - present)

    took, out = restore('-e', 'restore_target_time=%s' % utc_text(point))
    present = orders_in_db(target, codes)
    redundancy_s, sale_s = back_to_full_redundancy(target, token, item)
    print('restore to %s (%.1f s after the second order): %.0f s, redundancy %.0f s, sale %.0f s; present %s'
          % (utc_text(point), point - second_at, took, redundancy_s, sale_s, sorted(present)))
    assert first in present and second in present, 'orders before the restore point are missing: %s' % out[-2000:]
    assert third not in present, 'an order after the restore point is back'
