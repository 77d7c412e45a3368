"""The secret_mounts filter: the one way the roles mount the secrets role's Docker secrets."""

import json
import os
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.boxoffice.pretix.plugins.filter.secret_mounts import FilterModule, secret_mounts
from conftest import REPO_ROOT

SECRETS_DOCKER = {
    'pg_pretix_password': {'secret_name': 'boxoffice_pg_pretix_password_v2', 'secret_id': 'id-pretix'},
    'pg_pgpool_password': {'secret_name': 'boxoffice_pg_pgpool_password_v1', 'secret_id': 'id-pgpool'},
    'redis_password': {'secret_name': 'boxoffice_redis_password_v1', 'secret_id': 'id-redis'},
}


def test_is_the_collections_filter():
    assert FilterModule().filters() == {'secret_mounts': secret_mounts}


def test_a_list_mounts_each_secret_under_its_own_name_in_the_order_given():
    assert secret_mounts(SECRETS_DOCKER, ['redis_password', 'pg_pretix_password']) == [
        {'secret_name': 'boxoffice_redis_password_v1', 'secret_id': 'id-redis', 'filename': 'redis_password'},
        {'secret_name': 'boxoffice_pg_pretix_password_v2', 'secret_id': 'id-pretix',
         'filename': 'pg_pretix_password'},
    ]


def test_a_mapping_mounts_each_secret_under_its_file_name():
    mounts = secret_mounts(SECRETS_DOCKER, {'pretix_password': 'pg_pretix_password',
                                            'redis_password': 'redis_password'})
    assert [m['filename'] for m in mounts] == ['pretix_password', 'redis_password']
    assert mounts[0]['secret_name'] == 'boxoffice_pg_pretix_password_v2'


def test_owner_and_mode_only_when_given_and_the_fact_is_left_alone():
    assert set(secret_mounts(SECRETS_DOCKER, ['redis_password'])[0]) == {'secret_name', 'secret_id', 'filename'}
    mount = secret_mounts(SECRETS_DOCKER, ['redis_password'], uid='15371', gid='15371', mode=256)[0]
    assert (mount['uid'], mount['gid'], mount['mode']) == ('15371', '15371', 256)
    assert SECRETS_DOCKER['redis_password'] == {'secret_name': 'boxoffice_redis_password_v1', 'secret_id': 'id-redis'}


def test_nothing_wanted_mounts_nothing():
    assert not secret_mounts({}, [])


def test_every_missing_secret_is_named():
    with pytest.raises(AnsibleFilterError, match=r"Missing Docker secrets \['a', 'b'\]: run the boxoffice.pretix.secrets"):
        secret_mounts(SECRETS_DOCKER, ['b', 'redis_password', 'a', 'b'])


@pytest.mark.parametrize('secrets_docker, files, message', [
    ('boxoffice_redis_password_v1', ['redis_password'], 'secrets_docker mapping'),
    (SECRETS_DOCKER, 'redis_password', 'got the string'),
])
def test_wrong_shapes_are_refused(secrets_docker, files, message):
    with pytest.raises(AnsibleFilterError, match=message):
        secret_mounts(secrets_docker, files)


# The pipeline each role carried before the filter; the filter must give the services the same specs.
PLAYBOOK = '''
- hosts: localhost
  gather_facts: false
  vars:
    secrets_docker: %(secrets)s
    users: {pretix: pg_pretix_password, pgpool: pg_pgpool_password}
    files: {pretix_password: pg_pretix_password, redis_password: redis_password}
    uid: "15371"
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ pairs | to_json }}"
      vars:
        pairs:
          - - "{{ users.values() | map('extract', secrets_docker)
                  | zip(users.values() | map('community.general.dict_kv', 'filename')) | map('combine') | list }}"
            - "{{ secrets_docker | boxoffice.pretix.secret_mounts(users.values() | list) }}"
          - - "{{ files | dict2items | map(attribute='value') | map('extract', secrets_docker)
                  | zip(files.keys() | map('community.general.dict_kv', 'filename')) | map('combine') | list }}"
            - "{{ secrets_docker | boxoffice.pretix.secret_mounts(files) }}"
          - - "{{ users.values() | map('extract', secrets_docker)
                  | zip(users.values() | map('community.general.dict_kv', 'filename')) | map('combine')
                  | map('combine', {'uid': uid, 'gid': uid, 'mode': 256}) | list }}"
            - "{{ secrets_docker | boxoffice.pretix.secret_mounts(users.values() | list, uid=uid, gid=uid, mode=256) }}"
'''


def test_gives_what_the_roles_pipeline_gave(tmp_path):
    (tmp_path / 'play.yml').write_text(PLAYBOOK % {'secrets': json.dumps(SECRETS_DOCKER)})
    out = tmp_path / 'out.json'
    env = {k: v for k, v in os.environ.items() if k != 'ANSIBLE_VAULT_PASSWORD_FILE'}
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
                           '-c', 'local', '-e', 'ansible_python_interpreter=%s' % sys.executable,
                           '-e', 'out=%s' % out, str(tmp_path / 'play.yml')],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pairs = json.loads(out.read_text())
    assert len(pairs) == 3
    for before, now in pairs:
        assert now == before and now
