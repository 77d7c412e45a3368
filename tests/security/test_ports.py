"""The node as a host outside the swarm sees it: every TCP port open on its address (nmap, Debian's
package), scanned from a network namespace of this test's own, joined to the host by a veth pair,
so the packets arrive from outside like a stranger's and meet Docker's published-port rules.

Runs against the stack deployed on this machine; needs root (ip netns) and nmap.
"""

import re
import shutil
import subprocess

import pytest

NAMESPACE = 'bxtest-scan'
HOST_SIDE, SCAN_SIDE = 'bxtscan0', 'bxtscan1'
# A documentation network (RFC 5737) that no real host uses.
HOST_ADDRESS, SCAN_ADDRESS = '198.51.100.1', '198.51.100.2'

# What the stack opens on an edge and manager node, and why.
EXPECTED = {
    80: 'nginx: the redirect to HTTPS',
    443: 'nginx: the shop',
    2377: 'Swarm: cluster management (managers)',
    7946: 'Swarm: node gossip',
    5000: 'the in-swarm registry (host mode on every interface; TLS and login still to come, docs/security.md)',
}


def run(*argv, namespace=False):
    prefix = ['ip', 'netns', 'exec', NAMESPACE] if namespace else []
    return subprocess.run(prefix + list(argv), check=True, capture_output=True, text=True, timeout=300).stdout


@pytest.fixture(scope='module')
def outside():
    """(scanner namespace ready, the address of this node that others reach)."""
    if not shutil.which('nmap'):
        pytest.fail('nmap is not installed (scripts/bootstrap.sh installs it)')
    route = run('ip', '-o', '-4', 'route', 'get', '192.0.2.254')
    node = re.search(r'\bsrc (\S+)', route).group(1)
    subprocess.run(['ip', 'netns', 'del', NAMESPACE], capture_output=True, check=False)
    subprocess.run(['ip', 'link', 'del', HOST_SIDE], capture_output=True, check=False)
    run('ip', 'netns', 'add', NAMESPACE)
    try:
        run('ip', 'link', 'add', HOST_SIDE, 'type', 'veth', 'peer', 'name', SCAN_SIDE)
        run('ip', 'link', 'set', SCAN_SIDE, 'netns', NAMESPACE)
        run('ip', 'addr', 'add', HOST_ADDRESS + '/30', 'dev', HOST_SIDE)
        run('ip', 'link', 'set', HOST_SIDE, 'up')
        run('ip', 'addr', 'add', SCAN_ADDRESS + '/30', 'dev', SCAN_SIDE, namespace=True)
        run('ip', 'link', 'set', SCAN_SIDE, 'up', namespace=True)
        run('ip', 'route', 'add', 'default', 'via', HOST_ADDRESS, namespace=True)
        yield node
    finally:
        subprocess.run(['ip', 'link', 'del', HOST_SIDE], capture_output=True, check=False)
        subprocess.run(['ip', 'netns', 'del', NAMESPACE], capture_output=True, check=False)


def listeners():
    """TCP port -> the processes of this machine that listen on it (empty: a listener this
    machine's process table does not show, such as the sandbox's own)."""
    owners = {}
    for line in run('ss', '-H', '-ltnp').splitlines():
        fields = line.split()
        port = int(fields[3].rsplit(':', 1)[1])
        owners.setdefault(port, set()).update(re.findall(r'\(\("([^"]+)"', line))
    return owners


def test_a_stranger_finds_only_the_expected_ports_open(outside):
    report = run('nmap', '-Pn', '-sT', '-p-', '--min-rate', '2000', '-T4', outside, namespace=True)
    print('\n' + report)
    open_ports = sorted(int(p) for p in re.findall(r'^(\d+)/tcp\s+open\b', report, re.M))
    assert 443 in open_ports, report
    owners = listeners()
    unexpected = {p: sorted(owners.get(p, ())) for p in open_ports
                  if p not in EXPECTED and owners.get(p)}
    assert not unexpected, 'open to a host outside the swarm: %s' % unexpected
