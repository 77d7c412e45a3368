#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection's plugins.
#
# ansible-test only works inside a path ending in ansible_collections/<namespace>/<name>, and the
# checkout is not one, so the parts sanity looks at are copied into a temporary tree first.
# ansible-test builds one virtualenv per sanity test (--requirements fills them from PyPI), so
# the project venv is not modified and no container image (unreachable here) is needed. Those
# venvs and ansible-test's download cache live under .cache/ansible-test-home (HOME is pointed
# there): reused between runs, and our offline pip bootstrap (scripts/sanity_get_pip.py) never
# lands in anyone's real ~/.ansible. Extra arguments go to ansible-test, e.g.
#   scripts/sanity.sh --test validate-modules
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${SANITY_PYTHON_VERSION:-3.11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/boxoffice/pretix"
mkdir -p "$dest"

parts=(plugins meta galaxy.yml)
[ -d "$repo/tests/sanity" ] && parts+=(tests/sanity)
tar -C "$repo" --exclude=__pycache__ -c "${parts[@]}" | tar -C "$dest" -x

if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$repo/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$repo/.venv/bin/activate"
fi

# pip keeps reading the user's configuration (index mirrors, certificates) from the real HOME.
export XDG_CONFIG_HOME="${XDG_CONFIG_HOME:-$HOME/.config}"
export HOME="$repo/.cache/ansible-test-home"
pip_version=$(python -c 'from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
import sys
print(get_venv_packages(NativePythonConfig(version="%d.%d" % sys.version_info[:2]))["pip"])')
mkdir -p "$HOME/.ansible/test/cache"
cp "$repo/scripts/sanity_get_pip.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"

cd "$dest"
ansible-test sanity --local --requirements --python "$python" --color no "$@" plugins/
