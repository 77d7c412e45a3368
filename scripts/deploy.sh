#!/bin/sh
# Quick start: deploy the whole stack on the hosts of the given inventory (default: this machine).
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec ansible-playbook site.yml "$@"
