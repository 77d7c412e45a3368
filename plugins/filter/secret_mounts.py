# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The secret mounts of a Swarm service, from the Docker secrets the secrets role published."""

from __future__ import annotations

DOCUMENTATION = r'''
name: secret_mounts
short_description: Mount the secrets role's Docker secrets into a Swarm service
version_added: 0.1.0
author:
  - boxoffice.pretix engineers (!UNKNOWN)
description:
  - Turns the C(secrets_docker) fact of the boxoffice.pretix.secrets role (name -> C(secret_name),
    C(secret_id)) into the O(community.docker.docker_swarm_service#module:secrets) list of a
    service, one entry per wanted secret, in the order given.
  - Fails, naming every missing one, when the secrets role did not publish a wanted name, so a
    role that evaluates the mounts before it changes anything fails before any change.
options:
  _input:
    description: The C(secrets_docker) fact of the secrets role.
    type: dict
    required: true
  files:
    description:
      - The secrets to mount. A list of secrets role names mounts each as C(/run/secrets/<name>);
        a mapping of file name -> secrets role name mounts each under its file name.
    type: raw
    required: true
  uid:
    description: Owner of the files in the container; Docker's default (root) when not given.
    type: str
  gid:
    description: Group of the files in the container; Docker's default (root) when not given.
    type: str
  mode:
    description: File mode as a number (C(256) is C(0400)); Docker's default (C(0444)) when not given.
    type: int
'''

EXAMPLES = r'''
- name: Deploy a service that reads two passwords as /run/secrets/<name>
  community.docker.docker_swarm_service:
    name: redis-proxy
    image: "{{ redis_proxy_image }}"
    secrets: "{{ secrets_docker | boxoffice.pretix.secret_mounts(['redis_password', 'redis_proxy_stats_password']) }}"

- name: Mount them under other file names, readable only by the service's user
  community.docker.docker_swarm_service:
    name: pg-0
    image: "{{ postgres_repmgr_image }}"
    secrets: >-
      {{ secrets_docker | boxoffice.pretix.secret_mounts({'postgres_password': 'pg_superuser_password'},
                                                         uid='999', gid='999', mode=256) }}
'''

RETURN = r'''
_value:
  description:
    - One entry per wanted secret - the secrets role's C(secret_name) and C(secret_id), the
      C(filename), and C(uid), C(gid), C(mode) when they were given.
  type: list
  elements: dict
  sample:
    - secret_name: boxoffice_redis_password_v1
      secret_id: ktq1q5x9w6v0
      filename: redis_password
'''

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def secret_mounts(secrets_docker, files, uid=None, gid=None, mode=None):
    """Return the docker_swarm_service secrets of `files` (names, or file name -> name)."""
    if not isinstance(secrets_docker, Mapping):
        raise AnsibleFilterError('secret_mounts expects the secrets role\'s secrets_docker mapping, got %s'
                                 % type(secrets_docker).__name__)
    if isinstance(files, Mapping):
        wanted = list(files.items())
    elif isinstance(files, str):
        raise AnsibleFilterError('secret_mounts expects a list of secret names or a mapping of file name -> '
                                 'secret name, got the string %r' % files)
    else:
        wanted = [(name, name) for name in files]
    missing = [name for dummy, name in wanted if name not in secrets_docker]
    if missing:
        raise AnsibleFilterError('Missing Docker secrets %s: run the boxoffice.pretix.secrets role with them in '
                                 'secrets_names first.' % sorted(set(missing)))
    owner = {key: value for key, value in (('uid', uid), ('gid', gid), ('mode', mode)) if value is not None}
    return [dict(secrets_docker[name], filename=filename, **owner) for filename, name in wanted]


class FilterModule:
    """boxoffice.pretix filters."""

    def filters(self):
        return {'secret_mounts': secret_mounts}
