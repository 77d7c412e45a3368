#!/bin/sh
# The test suite. Installs what it needs (system packages, pinned Python tools), lints, deploys
# the whole stack on this machine with site.yml (Docker engine, swarm, images, data tier, shop),
# then runs pytest: unit tests, integration tests against the real engine, ansible-test sanity,
# and the end-to-end tests against the deployed shop (buy a ticket, scale, heal, second site.yml
# run changes nothing).
#
# Without arguments the tests marked slow are left out (failover drills, molecule scenarios on
# the docker-in-docker test cluster, cold image builds, load runs against a bare pretix):
#   scripts/test.sh                  # what CI runs
#   scripts/test.sh -m slow          # only the slow ones
#   scripts/test.sh -k molecule      # any pytest selection (then slow tests are included)
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
# The local stack's secret store (inventories/local) and the tests read it with this password.
ANSIBLE_VAULT_PASSWORD_FILE=$(scripts/vault_password.sh)
export ANSIBLE_VAULT_PASSWORD_FILE

echo "== ansible-lint (production profile)"
ansible-lint --profile production

echo "== Deploy the whole stack on this machine (site.yml)"
start=$(date +%s)
ansible-playbook site.yml -e secrets_generate=true
echo "site.yml took $(( $(date +%s) - start )) s"

echo "== pytest"
if [ $# -eq 0 ]; then
    set -- -m "not slow"
fi
exec python -m pytest -p no:cacheprovider -ra --durations=15 "$@" tests
