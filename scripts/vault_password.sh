#!/bin/sh
# Print the path of the vault password of this machine's secret store (inventories/local), making
# one when neither the password nor the store exists yet (a fresh machine). A store without its
# password is an error: the values in it could not be read any more.
#   export ANSIBLE_VAULT_PASSWORD_FILE=$(scripts/vault_password.sh)
set -eu
password=${ANSIBLE_VAULT_PASSWORD_FILE:-$HOME/.config/boxoffice/vault-password}
store=$HOME/.config/boxoffice/secrets/local
if [ ! -s "$password" ]; then
    if [ -d "$store" ] && [ -n "$(ls -A "$store")" ]; then
        echo "vault_password: $store holds secrets but their vault password $password is missing;" \
             "restore it (or set ANSIBLE_VAULT_PASSWORD_FILE to it)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$password")"
    chmod 0700 "$(dirname "$password")"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(36))' > "$password")
fi
echo "$password"
