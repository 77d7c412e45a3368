#!/bin/sh
# Prepare a fresh Debian 12 controller: system packages the playbooks and tests call, and the
# pinned Python tools in ./.venv. The Docker engine itself is installed by the docker_engine role.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (the local inventory installs packages and starts dockerd)" >&2
    exit 1
fi

apt_packages="python3 python3-venv python3-pip git ca-certificates debootstrap busybox-static openssl libnfs-utils iproute2"
# The browser test (tests/e2e/test_browser_purchase.py): Debian's chromium, driven by Playwright,
# certutil to make it trust the stack's self-signed certificate, and a font for its screenshot.
apt_packages="$apt_packages chromium libnss3-tools fonts-dejavu-core"
# tests/security/test_ports.py scans the node from outside the swarm.
apt_packages="$apt_packages nmap"
missing=""
for package in $apt_packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Re-install only when the pins changed since the last successful install.
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$wanted" > "$stamp"
fi
