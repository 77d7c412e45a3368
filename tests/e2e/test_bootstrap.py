"""boxoffice.pretix.pretix_bootstrap against the deployed stack: check mode changes nothing, the
first run creates, the second reports no change, and the result is visible through the REST API.

Uses a fresh organiser bxtest-<random> (left in the shop's database: pretix has no organiser
deletion that would not also need the shop's deletion flow) and the deployed admin password, so
the shop itself is not modified. Settings as in test_buy_ticket.py.
"""

import json
import os
import subprocess
import uuid

import requests

from test_buy_ticket import BASE_URL, TLS_CA, read_vault
from conftest import REPO_ROOT

ANSIBLE = os.path.join(REPO_ROOT, '.venv', 'bin', 'ansible')


def bootstrap(args, check=False):
    cmd = [ANSIBLE if os.path.exists(ANSIBLE) else 'ansible', 'localhost', '-m',
           'boxoffice.pretix.pretix_bootstrap', '-a', json.dumps(args), '-o']
    if check:
        cmd.append('--check')
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    # -o prints "localhost | CHANGED => {...}" on one line.
    return json.loads(proc.stdout.split('=>', 1)[1])


def api(path, token):
    session = requests.Session()
    session.trust_env = False
    session.verify = TLS_CA if os.path.exists(TLS_CA) else False
    return session.get(BASE_URL + '/api/v1/' + path, headers={'Authorization': 'Token ' + token}, timeout=30)


def test_bootstrap_is_idempotent_and_check_mode_safe():
    slug = 'bxtest-%s' % uuid.uuid4().hex[:8]
    token = uuid.uuid4().hex + uuid.uuid4().hex[:16]
    args = {
        'admin_password': read_vault('pretix_admin_password'),
        'organizer': {'slug': slug, 'name': 'Test organiser'},
        'event': {'slug': 'show', 'name': 'Test show'},
        'product': {'name': 'Seat', 'price': '12.50'},
        'quota_size': 42,
        'api_token': token,
    }
    for _ in range(2):  # a check run must leave nothing behind for the next one
        preview = bootstrap(args, check=True)
        assert preview['changed'] is True
        assert 'organizer %s' % slug in preview['changes']
    assert api('organizers/%s/events/' % slug, token).status_code in (401, 403)

    first = bootstrap(args)
    assert first['changed'] is True and first['event_url'] == '/%s/show/' % slug
    second = bootstrap(args)
    assert second['changed'] is False, second['changes']

    event = api('organizers/%s/events/show/' % slug, token)
    assert event.status_code == 200, event.text[:500]
    assert event.json()['live'] is True
    quotas = api('organizers/%s/events/show/quotas/' % slug, token).json()['results']
    assert [q['size'] for q in quotas] == [42]
    items = api('organizers/%s/events/show/items/' % slug, token).json()['results']
    assert [i['default_price'] for i in items] == ['12.50']


def test_bootstrap_rejects_event_without_organizer():
    cmd = [ANSIBLE if os.path.exists(ANSIBLE) else 'ansible', 'localhost', '-m',
           'boxoffice.pretix.pretix_bootstrap', '-a',
           json.dumps({'admin_password': 'x' * 12, 'event': {'slug': 'e', 'name': 'E'}}), '-o']
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'organizer' in proc.stdout


def test_api_token_is_found_by_name_and_the_admin_password_kept():
    """A later run with another token value updates the one token of that name instead of adding
    one; another admin password is not applied over the deployed one (update_password on_create)."""
    slug = 'bxtest-%s' % uuid.uuid4().hex[:8]
    first_token = uuid.uuid4().hex + uuid.uuid4().hex[:16]
    second_token = uuid.uuid4().hex + uuid.uuid4().hex[:16]
    args = {'admin_password': read_vault('pretix_admin_password'),
            'organizer': {'slug': slug, 'name': 'Test organiser'},
            'api_token': first_token, 'api_token_name': 'bxtest'}
    assert bootstrap(args)['api_tokens_named'] == 1
    again = bootstrap(dict(args, api_token=second_token))
    assert again['changes'] == ['api token bxtest: token'] and again['api_tokens_named'] == 1
    assert api('organizers/%s/' % slug, second_token).status_code == 200
    assert api('organizers/%s/' % slug, first_token).status_code in (401, 403)

    kept = bootstrap(dict(args, api_token=second_token, admin_password='not-the-deployed-one'))
    assert kept['changed'] is False, kept['changes']
