#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: secret_store
short_description: Read the stack's secrets from vault-encrypted files, creating them only when asked
version_added: 0.1.0
author:
  - boxoffice.pretix engineers (!UNKNOWN)
description:
  - Reads one file per name, C(<path>/<name><suffix>), on the controller. Files encrypted with
    ansible-vault are decrypted with the vault secrets given to the run (C(--vault-id),
    C(--vault-password-file), C(ANSIBLE_VAULT_PASSWORD_FILE), or the AWX Vault credential); no
    C(ansible-vault) program is called. A file that is not encrypted is read as it is.
  - Fails, before anything is written, when a file cannot be decrypted (no or a wrong vault
    password), is empty, or is missing. The message names the files it looked for and what to set.
  - With O(generate=true) the missing names are created, each a random password of O(length)
    letters and digits (or the value given in O(new_values)), encrypted with the vault secret of the
    run and written with mode 0600. Never for a name the swarm already runs a Docker secret of
    (see O(swarm_secrets)); a missing value there is an error, as it means the store is not the one
    the stack was deployed from.
  - When the swarm's newest Docker secret of a name was made from another value, the module fails
    unless O(rotate=true), so a wrong store never rolls the services onto new passwords.
  - The values are returned in RV(secrets) and never shown in the output.
  - This is an action plugin; it runs on the controller only.
options:
  path:
    description: Controller directory of the files.
    type: path
    required: true
  names:
    description: Names of the secrets (letters, digits, C(.), C(-), C(_)).
    type: list
    elements: str
    required: true
  suffix:
    description: File name suffix after the name.
    type: str
    default: .vault
  generate:
    description: Create the missing names (never when the swarm already runs them).
    type: bool
    default: false
  length:
    description: Length of a generated password (at least 16).
    type: int
    default: 32
  new_values:
    description: Value to store for a missing name instead of a random password, e.g. a private key.
    type: dict
    default: {}
  vault_id:
    description:
      - Vault id whose secret encrypts new files, when the run was given several. Defaults to the
        C(vault_encrypt_identity) setting, else the only or first vault secret of the run.
    type: str
  swarm_secrets:
    description:
      - The swarm's Docker secrets, as the rows of C(docker secret ls --format '{{json .}}')
        (C(Name) and C(Labels)), each as JSON text or parsed. Empty when there is no swarm yet.
    type: list
    elements: raw
    default: []
  docker_prefix:
    description: Prefix of the Docker secret names; the secret of a name is C(<docker_prefix><name>_v<N>).
    type: str
    default: ""
  rotate:
    description: Accept values that differ from the Docker secrets the swarm runs.
    type: bool
    default: false
extends_documentation_fragment:
  - boxoffice.pretix.swarm.attributes
attributes:
  check_mode:
    support: full
    details:
      - Generated values are returned but not written.
  diff_mode:
    support: none
    details:
      - No diff; the values are secret.
  idempotent:
    support: full
    details:
      - A name created by one run is read, not created again, by the next.
'''

EXAMPLES = r'''
- name: Read the database passwords of this inventory
  boxoffice.pretix.secret_store:
    path: "{{ inventory_dir }}/secrets"
    names: [pg_superuser_password, redis_password]
  register: store

- name: First deploy - create them (vault-encrypted with the run's vault password)
  boxoffice.pretix.secret_store:
    path: "{{ inventory_dir }}/secrets"
    names: [pg_superuser_password, redis_password]
    generate: true
'''

RETURN = r'''
secrets:
  description: Name to value, for every name. Censored in the output (no_log), available when registered.
  returned: success
  type: dict
created:
  description: Names that were created (in check mode, would be).
  returned: always
  type: list
  elements: str
rotated:
  description: Names whose value differs from the Docker secret the swarm runs (only with O(rotate=true)).
  returned: success
  type: list
  elements: str
path:
  description: The directory read, with C(~) expanded.
  returned: always
  type: str
'''
