#!/bin/sh
# The test suite: prepares this machine with the project's own roles (Docker engine, single-node
# swarm), lints, then runs pytest (unit, integration against the real engine, molecule scenarios,
# ansible-test sanity). Extra arguments go to pytest, e.g. scripts/test.sh -k molecule.
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

echo "== Docker engine and single-node swarm on this machine (playbooks/swarm.yml)"
ansible-playbook playbooks/swarm.yml

echo "== ansible-lint (production profile)"
ansible-lint --profile production

echo "== pytest"
exec python -m pytest -p no:cacheprovider -ra "$@" tests
