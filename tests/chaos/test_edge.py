"""The edge under continuous orders (issue 18): nginx on every edge node, keepalived's floating
address, and certificate rollouts that reload nginx in place.

- test_certificate_rollout_drops_no_order: a new certificate and key rolled out with the nginx
  role while buyers order; every attempt must succeed. On the local stack (`shop`) and, with
  BOXOFFICE_CHAOS_CLUSTER=1, on the test cluster (`cluster_shop`, through its floating address).
- test_lose_the_node_holding_the_floating_address: the test-cluster node that holds the address
  killed (power loss), started again after OUTAGE s; recorded: orders confirmed, missing,
  failed attempts, and the seconds until the shop answered again on the same address. Full
  redundancy afterwards includes nginx on every edge node and exactly one holder of the address.

Both are slow (a rollout runs playbooks/app.yml twice: the new pair, then the original back).
The records go to reports/chaos.jsonl like the other chaos cases.
"""

import datetime
import os
import socket
import ssl
import urllib.parse
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import chaoslib
from conftest import cert_pem, key_pem, new_key, run_playbook
# The chaos module's fixtures and helpers, so both modules break the same stacks the same way.
from test_chaos import (OUTAGE, RECOVERY_TIMEOUT, cluster_only, cluster_shop, records,  # noqa: F401 pylint: disable=unused-import
                        run, shop)

# A rollout runs playbooks/app.yml, minutes on a busy machine; full redundancy is then waited for.
ROLLOUT_TIMEOUT = RECOVERY_TIMEOUT + 900

CLUSTER_INVENTORY = 'inventories/testcluster/hosts.yml'


def new_pair(directory, names=('localhost',), addresses=('127.0.0.1',)):
    """(certificate file, key file): a fresh self-signed pair for the shop's names, valid 30 days."""
    key = new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    # A subject of its own: a client's trust store finds a self-signed certificate by its subject,
    # and of two with the same subject it would try only one.
    cert = cert_pem(key, list(names), now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30),
                    addresses=addresses, organization='boxoffice rollout %s' % uuid.uuid4().hex[:12])
    cert_file, key_file = os.path.join(directory, 'cert.pem'), os.path.join(directory, 'key.pem')
    with open(cert_file, 'w', encoding='utf-8') as handle:
        handle.write(cert)
    with open(key_file, 'w', encoding='utf-8') as handle:
        handle.write(key_pem(key))
    return cert_file, key_file


def served_certificate(target):
    """The certificate the shop's address serves now (to its host name), as PEM."""
    url = urllib.parse.urlsplit(target.base_url)
    address = target.edge() if target.edge else url.hostname
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only read here; the buyers verify it
    with socket.create_connection((address, url.port or 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=url.hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


def rollout(inventory_args, cert_file, key_file, results):
    """The fault: the nginx role run with the new pair, as an operator renews a certificate."""
    def fault(target):
        started = chaoslib.now()
        rc, output = run_playbook('playbooks/app.yml', *inventory_args, '-e', 'nginx_tls_cert_file=' + cert_file,
                                  '-e', 'nginx_tls_key_file=' + key_file)
        results['rc'], results['output'] = rc, output
        with open(cert_file, encoding='utf-8') as handle:
            results['served'] = served_certificate(target).strip() == handle.read().strip()
        return [{'role': 'certificate rollout', 'at': started, 'rc': rc,
                 'seconds': round(chaoslib.now() - started, 1)}]
    return fault


def trust_both(target, tmp_path, cert_file):
    """Buyers trust the certificate served before and the new one, as browsers trust a CA."""
    bundle = tmp_path / 'trusted.pem'
    with open(target.ca, encoding='utf-8') as old, open(cert_file, encoding='utf-8') as new:
        bundle.write_text(old.read().strip() + '\n' + new.read().strip() + '\n')
    original, target.ca = target.ca, str(bundle)
    return original


def certificate_rollout_case(stack, records_, tmp_path, inventory_args):
    target = stack[0]
    cert_file, key_file = new_pair(str(tmp_path))
    original_ca = trust_both(target, tmp_path, cert_file)
    results = {}
    try:
        record = run(stack, records_, 'certificate rollout', rollout(inventory_args, cert_file, key_file, results),
                     timeout=ROLLOUT_TIMEOUT)
    finally:
        target.ca = original_ca
        rc, output = run_playbook('playbooks/app.yml', *inventory_args)
        assert rc == 0, 'putting the original certificate back failed:\n' + output[-3000:]
    assert results['rc'] == 0, results['output'][-3000:]
    assert results['served'], 'the shop does not serve the new certificate after the rollout'
    assert record['failed_attempts'] == 0, 'orders failed during the rollout: %s' % (record['errors'],)


@pytest.mark.slow
def test_certificate_rollout_drops_no_order_local(shop, records, tmp_path):  # noqa: F811 pylint: disable=redefined-outer-name
    certificate_rollout_case(shop, records, tmp_path, [])


@cluster_only
@pytest.mark.slow
def test_certificate_rollout_drops_no_order_cluster(cluster_shop, records, tmp_path):  # noqa: F811 pylint: disable=redefined-outer-name
    certificate_rollout_case(cluster_shop, records, tmp_path, ['-i', CLUSTER_INVENTORY])


def lose_floating_address_node(target):
    """Power loss of the node holding the floating address; the seconds until the shop answered
    again on that address are recorded; power back after OUTAGE s."""
    holders = target.engine.holders(target.floating_address)
    assert len(holders) == 1, 'the floating address is held by %s' % holders
    node = holders[0]
    fault = {'node': node, 'role': 'holder of the floating address', 'at': chaoslib.now()}
    target.engine.kill_node(node)
    session = target.session()
    while chaoslib.now() - fault['at'] < OUTAGE:
        try:
            if session.get(target.base_url + '/', timeout=2).status_code == 200:
                fault['answers_again_s'] = round(chaoslib.now() - fault['at'], 2)
                break
        except chaoslib.requests.RequestException:
            session.close()
            session = target.session()
        chaoslib.time.sleep(0.2)
    session.close()
    fault['new_holders'] = target.engine.holders(target.floating_address)
    chaoslib.time.sleep(max(0.0, OUTAGE - (chaoslib.now() - fault['at'])))
    target.engine.start_node(node)
    return [fault]


@cluster_only
@pytest.mark.slow
def test_lose_the_node_holding_the_floating_address(cluster_shop, records):  # noqa: F811 pylint: disable=redefined-outer-name
    if not cluster_shop[0].floating_address:
        pytest.skip('the test cluster has no keepalived_address')
    record = run(cluster_shop, records, 'node loss (floating address)', lose_floating_address_node, restore=False)
    fault = record['killed'][0]
    assert fault.get('answers_again_s') is not None, 'the shop did not answer on %s within %ss' % (
        cluster_shop[0].floating_address, OUTAGE)
    assert fault['new_holders'] and fault['node'] not in fault['new_holders'], fault
