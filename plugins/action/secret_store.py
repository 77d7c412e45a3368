# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller side of boxoffice.pretix.secret_store (documented in plugins/modules/secret_store.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import string
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.parsing.vault import VaultLib, is_encrypted, match_encrypt_secret
from ansible.plugins.action import ActionBase

try:
    from ansible.parsing.vault import VaultSecretsContext
except ImportError:  # ansible-core < 2.19
    VaultSecretsContext = None

ARGUMENT_SPEC = dict(
    path=dict(type='path', required=True),
    names=dict(type='list', elements='str', required=True),
    suffix=dict(type='str', default='.vault'),
    generate=dict(type='bool', default=False),
    length=dict(type='int', default=32),
    new_values=dict(type='dict', default={}, no_log=True),
    vault_id=dict(type='str'),
    swarm_secrets=dict(type='list', elements='raw', default=[]),
    docker_prefix=dict(type='str', default=''),
    rotate=dict(type='bool', default=False),
)
ALPHABET = string.ascii_letters + string.digits
HOW_TO_GIVE_THE_PASSWORD = (
    'Give ansible-playbook the vault password of this store (--vault-id, --vault-password-file or '
    'ANSIBLE_VAULT_PASSWORD_FILE; in AWX attach the Vault credential to the job template).')


def deployed_versions(swarm_secrets, prefix, names):
    """Map each name to (newest version, its ansible_key label) among the swarm's Docker secrets.

    swarm_secrets are the rows of `docker secret ls --format '{{json .}}'` (JSON text or parsed):
    Name, and Labels as "key=value,key=value". community.docker.docker_secret labels each secret it creates with
    ansible_key, the SHA-224 of the value.
    """
    found = {}
    for row in swarm_secrets:
        if isinstance(row, str):
            row = json.loads(row)
        for name in names:
            match = re.match(r'^%s_v([0-9]+)$' % re.escape(prefix + name), row.get('Name', ''))
            if not match:
                continue
            version = int(match.group(1))
            labels = dict(item.split('=', 1) for item in (row.get('Labels') or '').split(',') if '=' in item)
            if name not in found or version > found[name][0]:
                found[name] = (version, labels.get('ansible_key', ''))
    return found


def vault_secrets(loader):
    if VaultSecretsContext is not None:
        context = VaultSecretsContext.current(optional=True)
        if context is not None:
            return list(context.secrets or [])
    return list(loader._vault.secrets or [])  # pylint: disable=protected-access


def write_private(path, data):
    """Write data to path (mode 0600) through a temporary file in the same directory."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix='.secret_store-')
    try:
        with os.fdopen(handle, 'wb') as stream:
            stream.write(data)
        os.chmod(temporary, 0o600)
        os.rename(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        path = os.path.expanduser(args['path'])
        names = args['names']
        suffix = args['suffix']
        result.update(changed=False, created=[], path=path)

        bad = [n for n in names if not re.match(r'^[A-Za-z0-9_.-]+$', n)]
        if bad or args['length'] < 16:
            return dict(result, failed=True, msg='names must be file names made of letters, digits, '
                        '".", "-" and "_" (got %s), and length at least 16 (got %d).' % (bad, args['length']))

        def where(name):
            return os.path.join(path, name + suffix)

        secrets_loaded = vault_secrets(self._loader)
        vault = VaultLib(secrets_loaded)
        values, missing, unreadable = {}, [], []
        for name in names:
            try:
                with open(where(name), 'rb') as stream:
                    data = stream.read()
            except FileNotFoundError:
                missing.append(name)
                continue
            except OSError as exc:
                unreadable.append('%s (%s)' % (where(name), exc.strerror))
                continue
            if is_encrypted(data):
                if not secrets_loaded:
                    return dict(result, failed=True, msg='No vault password was given, so %s cannot be '
                                'decrypted. %s' % (where(name), HOW_TO_GIVE_THE_PASSWORD))
                try:
                    data = vault.decrypt(data)
                except AnsibleError as exc:
                    unreadable.append('%s (%s)' % (where(name), to_text(exc.message)))
                    continue
            value = to_text(data, errors='surrogate_or_strict').strip()
            if value:
                values[name] = value
            else:
                unreadable.append('%s (empty)' % where(name))
        if unreadable:
            return dict(result, failed=True, msg='Cannot read %s with the vault password(s) given '
                        '(vault ids %s). Restore those files from the store this stack was deployed '
                        'with, or give its vault password. %s'
                        % (', '.join(unreadable), [v for v, dummy in secrets_loaded], HOW_TO_GIVE_THE_PASSWORD))

        deployed = deployed_versions(args['swarm_secrets'], args['docker_prefix'], names)

        def running_secrets(subset):
            return ', '.join('%s%s_v%d' % (args['docker_prefix'], n, deployed[n][0]) for n in subset)

        running = [n for n in missing if n in deployed]
        if running:
            return dict(result, failed=True, msg=(
                'Secrets %s are not in %s (looked for %s), but the swarm already runs Docker secrets '
                'made from them (%s): this stack was deployed from another secret store. Set secrets_dir '
                '(nginx_tls_dir for the TLS key) to that store, or put its files back, and give its vault '
                'password. New values are never generated for a running stack; that would roll every '
                'service onto new passwords.' % (
                    running, path, ', '.join(where(n) for n in running), running_secrets(running))))
        if missing and not args['generate']:
            return dict(result, failed=True, msg=(
                'Secrets %s not found in %s (looked for %s). On the first deploy of a stack create them '
                'with -e secrets_generate=true (vault-encrypted with the vault password of the run; keep '
                'that directory with the inventory); otherwise set secrets_dir to the directory that '
                'holds them. %s' % (missing, path, ', '.join(where(n) for n in missing),
                                    HOW_TO_GIVE_THE_PASSWORD)))

        if missing:
            encrypt_id = args['vault_id'] or C.DEFAULT_VAULT_ENCRYPT_IDENTITY
            try:
                encrypt_secret = match_encrypt_secret(secrets_loaded, encrypt_id)
            except AnsibleError as exc:
                return dict(result, failed=True, msg=to_text(exc.message))
            if not encrypt_secret:
                return dict(result, failed=True, msg='No vault password was given, so the new secrets %s '
                            'cannot be encrypted into %s. %s' % (missing, path, HOW_TO_GIVE_THE_PASSWORD))
            vault_id, secret = encrypt_secret
            for name in missing:
                value = args['new_values'].get(name) or ''.join(
                    secrets.choice(ALPHABET) for dummy in range(args['length']))
                values[name] = to_text(value).strip()
                if not self._task.check_mode:
                    write_private(where(name), vault.encrypt(to_bytes(value), secret=secret, vault_id=vault_id))
            result.update(changed=True, created=missing)

        changing = [n for n in names if n in deployed and deployed[n][1]
                    and deployed[n][1] != hashlib.sha224(to_bytes(values[n])).hexdigest()]
        if changing and not args['rotate']:
            return dict(result, failed=True, msg=(
                'The values of %s in %s differ from the Docker secrets the swarm runs (%s). Nothing was '
                'changed. If you changed them on purpose, run with -e secrets_rotate=true to roll the '
                'services onto new secret versions; otherwise this is not the store the stack was '
                'deployed from: set secrets_dir to that one.' % (
                    changing, path, running_secrets(changing))))

        result.update(secrets=values, rotated=changing, _ansible_no_log=True)
        return result
