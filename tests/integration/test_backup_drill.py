"""Disasters the backups are for (issue 16), against the deployed stack; all slow.

- teardown.yml without data deletion: every service gone, every volume kept, and site.yml
  redeploys onto the same data (an order placed before is there).
- The disaster drill: buyers order continuously through the web checkout and the API; a backup
  is taken during the load; teardown.yml deletes every data volume; site.yml deploys a fresh stack
  and restore.yml restores the latest archived state. Every order confirmed up to the newest one
  that survived must be there (missing = 0); the RPO (confirmed orders lost, in seconds), the RTO
  (from the start of restore.yml until the shop sells again) and the backup's size and duration
  are recorded in reports/backup-drill.jsonl.
- A failover in the middle of WAL archiving: the primary is SIGKILLed, archiving carries on from
  the new primary, and a backup taken after the failover restores with every order.
"""

import json
import os
import re
import time

import pytest

from conftest import REPO_ROOT, run_playbook
from test_backup_restore import (PLAYBOOK_TIMEOUT, WATCHED, backup, back_to_full_redundancy, chaoslib,
                                 orders_in_db, place_order, restore, shop)  # noqa: F401  pylint: disable=unused-import

REPORT = os.path.join(REPO_ROOT, 'reports', 'backup-drill.jsonl')
DATA_VOLUMES = ('boxoffice_pgdata_pg-0', 'boxoffice_pgdata_pg-1', 'boxoffice_pgdata_pg-2', 'boxoffice_pretix_data')
REPO_VOLUME = 'boxoffice_pgbackrest'


def volume_names(client):
    return set(v['Name'] for v in client.api.volumes()['Volumes'] or [])


def services_gone(client):
    names = set(s['Spec']['Name'] for s in client.api.services())
    return not names.intersection(WATCHED)


def site():
    rc, out = run_playbook('site.yml', timeout=3600)
    assert rc == 0, out[-5000:]


def record(entry):
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, 'a', encoding='utf-8') as handle:
        handle.write(json.dumps(entry, sort_keys=True) + '\n')
    print(json.dumps(entry, indent=1, sort_keys=True))


@pytest.mark.slow
def test_teardown_keeps_the_volumes_and_a_redeploy_finds_the_data(shop, docker_client):
    target, token, item = shop
    code, _ = place_order(target, token, item)
    rc, out = run_playbook('playbooks/teardown.yml', timeout=PLAYBOOK_TIMEOUT)
    assert rc == 0, out[-4000:]
    chaoslib_wait = time.time() + 120
    while not services_gone(docker_client) and time.time() < chaoslib_wait:
        time.sleep(2)
    assert services_gone(docker_client)
    assert set(DATA_VOLUMES + (REPO_VOLUME,)) <= volume_names(docker_client)
    site()
    took, problems = chaoslib.wait_full_redundancy(target, timeout=600, poll=2)
    assert took is not None, problems
    assert code in orders_in_db(target, [code])


@pytest.mark.slow
def test_disaster_drill(shop, docker_client):
    target, token, item = shop
    buyers = chaoslib.Buyers(target, token, item, api_buyers=2, web_buyers=1, api_pacing=1.0).start()
    try:
        time.sleep(30)
        backup_started = time.time()
        label, out = backup()
        backup_s = time.time() - backup_started
        size = re.search(r'database ([0-9.]+) MiB, ([0-9.]+) MiB stored', out)
        data_size = re.search(r'/data archive ([0-9]+) bytes', out)
        time.sleep(90)  # orders after the backup reach the archive through WAL only
        disaster_at = time.time()
        rc, out = run_playbook('playbooks/teardown.yml', '-e', 'teardown_delete_data=true', timeout=PLAYBOOK_TIMEOUT)
        assert rc == 0, out[-4000:]
    finally:
        buyers.stop()
    attempts = buyers.snapshot()
    confirmed = [a for a in attempts if a.ok and a.ended <= disaster_at]
    assert not set(DATA_VOLUMES).intersection(volume_names(docker_client)), 'data volumes left'
    assert REPO_VOLUME in volume_names(docker_client)

    site()
    restore_s, out = restore()
    redundancy_s, sale_s = back_to_full_redundancy(target, token, item)
    present = orders_in_db(target, [a.code for a in confirmed])
    survived = [a for a in confirmed if a.code in present]
    newest = max((a.ended for a in survived), default=0)
    missing_before = sorted(a.code for a in confirmed if a.ended <= newest and a.code not in present)
    lost = [a for a in confirmed if a.code not in present]
    rto = restore_s + redundancy_s + sale_s
    entry = {
        'case': 'disaster drill', 'at': chaoslib.utc(disaster_at), 'backup': label,
        'backup_s': round(backup_s, 1),
        'backup_db_mib': float(size.group(1)) if size else None,
        'backup_stored_mib': float(size.group(2)) if size else None,
        'backup_data_bytes': int(data_size.group(1)) if data_size else None,
        'orders_confirmed': len(confirmed),
        'orders_confirmed_after_backup': len([a for a in confirmed if a.ended > backup_started]),
        'orders_present': len(survived), 'missing_before_newest_present': missing_before,
        'orders_lost': len(lost),
        'rpo_s': round(max((a.ended for a in lost), default=newest) - newest, 1) if lost else 0.0,
        'newest_present_before_disaster_s': round(disaster_at - newest, 1),
        'restore_playbook_s': round(restore_s, 1), 'redundancy_after_restore_s': round(redundancy_s, 1),
        'rto_s': round(rto, 1),
        'attempts_failed': len([a for a in attempts if not a.ok]),
    }
    record(entry)
    assert missing_before == [], 'orders confirmed before the newest restored one are missing'
    assert len(survived) > 0


@pytest.mark.slow
def test_failover_during_archiving_then_a_backup_restores(shop):
    target, token, item = shop
    before, _ = place_order(target, token, item)
    buyers = chaoslib.Buyers(target, token, item, api_buyers=2, web_buyers=0).start()
    try:
        time.sleep(10)
        killed = chaoslib.kill_pg_primary(target)
        took, problems = chaoslib.wait_full_redundancy(target, timeout=300, poll=2)
        assert took is not None, problems
        time.sleep(10)
    finally:
        buyers.stop()
    after, _ = place_order(target, token, item)
    rc, out = run_playbook('playbooks/backup_check.yml', timeout=300)
    assert rc == 0, out[-3000:]
    label, _ = backup()
    last, _ = place_order(target, token, item)
    codes = [before, after, last] + [a.code for a in buyers.confirmed()]
    restore_s, _ = restore()
    present = orders_in_db(target, codes)
    redundancy_s, _ = back_to_full_redundancy(target, token, item)
    record({'case': 'failover during archiving, then backup and restore', 'killed': killed[0]['service'],
            'backup': label, 'orders': len(set(codes)), 'missing': sorted(set(codes) - present),
            'restore_playbook_s': round(restore_s, 1), 'redundancy_after_restore_s': round(redundancy_s, 1)})
    assert present == set(codes)
