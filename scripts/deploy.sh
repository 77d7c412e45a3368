#!/bin/sh
# Quick start: deploy the whole stack on the hosts of the given inventory (default: this machine).
# The first run creates the secrets and the self-signed certificate (secrets_generate); later runs
# read them, and nothing is ever created for a stack that already runs.
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
ANSIBLE_VAULT_PASSWORD_FILE=$(scripts/vault_password.sh)
export ANSIBLE_VAULT_PASSWORD_FILE
exec ansible-playbook site.yml -e secrets_generate=true "$@"
