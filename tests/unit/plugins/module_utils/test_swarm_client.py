"""The one Docker client wrapper: connection options -> docker.DockerClient keyword arguments."""

import os
import socket

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.boxoffice.pretix.plugins.module_utils import swarm_services as ss


def validated(params, monkeypatch, environ=None):
    """The options as AnsibleModule would hand them over: defaults, aliases and DOCKER_* applied."""
    for name in ('DOCKER_HOST', 'DOCKER_TLS', 'DOCKER_TLS_VERIFY', 'DOCKER_TLS_HOSTNAME',
                 'DOCKER_API_VERSION', 'DOCKER_TIMEOUT', 'DOCKER_CERT_PATH'):
        monkeypatch.delenv(name, raising=False)
    for name, value in (environ or {}).items():
        monkeypatch.setenv(name, value)
    result = ArgumentSpecValidator(ss.DOCKER_COMMON_ARGS).validate(params)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


@pytest.fixture
def pem_files(tmp_path):
    """Files where the TLS options point; the SDK only checks that they exist."""
    paths = {}
    for name in ('ca.pem', 'cert.pem', 'key.pem'):
        path = tmp_path / name
        path.write_text('-----BEGIN CERTIFICATE-----\n')
        paths[name] = str(path)
    return paths


def test_defaults_are_the_local_socket_auto_version_and_a_60s_api_timeout(monkeypatch):
    kwargs = ss.client_kwargs(validated({}, monkeypatch), environ={})
    assert kwargs == {'base_url': 'unix:///var/run/docker.sock', 'version': 'auto', 'timeout': 60}


def test_docker_variables_fill_in_what_the_task_leaves_out(monkeypatch):
    params = validated({}, monkeypatch, {'DOCKER_HOST': 'tcp://manager:2375', 'DOCKER_API_VERSION': '1.45',
                                         'DOCKER_TIMEOUT': '90'})
    assert ss.client_kwargs(params, environ={}) == {
        'base_url': 'tcp://manager:2375', 'version': '1.45', 'timeout': 90}


def test_task_options_and_aliases_win_over_the_environment(monkeypatch):
    params = validated({'docker_url': 'tcp://other:2375', 'docker_api_version': '1.41', 'timeout': 5},
                       monkeypatch, {'DOCKER_HOST': 'tcp://manager:2375', 'DOCKER_TIMEOUT': '90'})
    assert ss.client_kwargs(params, environ={}) == {
        'base_url': 'tcp://other:2375', 'version': '1.41', 'timeout': 5}


def test_wait_timeout_is_not_the_api_timeout():
    assert ss.COMMON_ARGUMENT_SPEC['wait_timeout']['default'] == 300
    assert ss.COMMON_ARGUMENT_SPEC['timeout']['default'] == 60


def test_validate_certs_verifies_against_ca_path_and_presents_the_client_pair(monkeypatch, pem_files):
    params = validated({'docker_host': 'tcp://manager:2376', 'tls_verify': True, 'tls_ca_cert': pem_files['ca.pem'],
                        'client_cert': pem_files['cert.pem'], 'client_key': pem_files['key.pem']}, monkeypatch)
    tls = ss.client_kwargs(params, environ={})['tls']
    assert tls.verify == pem_files['ca.pem']
    assert tls.ca_cert == pem_files['ca.pem']
    assert tls.cert == (pem_files['cert.pem'], pem_files['key.pem'])


def test_validate_certs_without_ca_path_verifies_against_the_system_bundle(monkeypatch):
    params = validated({'docker_host': 'tcp://manager:2376', 'validate_certs': True}, monkeypatch)
    tls = ss.client_kwargs(params, environ={})['tls']
    assert tls.verify is True and tls.cert is None


def test_tls_alone_encrypts_without_verifying(monkeypatch, pem_files):
    params = validated({'docker_host': 'tcp://manager:2376', 'tls': True,
                        'client_cert': pem_files['cert.pem'], 'client_key': pem_files['key.pem']}, monkeypatch)
    tls = ss.client_kwargs(params, environ={})['tls']
    assert tls.verify is False
    assert tls.cert == (pem_files['cert.pem'], pem_files['key.pem'])


def test_validate_certs_takes_precedence_over_tls(monkeypatch):
    params = validated({'docker_host': 'tcp://manager:2376', 'tls': True, 'validate_certs': True}, monkeypatch)
    assert ss.tls_mode(params) == 'verify'
    assert ss.client_kwargs(params, environ={})['tls'].verify is True


def test_docker_cert_path_supplies_the_files_as_for_the_cli(monkeypatch, pem_files):
    cert_path = os.path.dirname(pem_files['ca.pem'])
    params = validated({}, monkeypatch, {'DOCKER_HOST': 'tcp://manager:2376', 'DOCKER_TLS_VERIFY': '1'})
    tls = ss.client_kwargs(params, environ={'DOCKER_CERT_PATH': cert_path})['tls']
    assert tls.verify == pem_files['ca.pem']
    assert tls.cert == (pem_files['cert.pem'], pem_files['key.pem'])


@pytest.mark.parametrize('options, message', [
    ({'docker_host': 'tcp://manager:2376', 'ca_path': '/ca.pem'}, 'only used over TLS: set tls or validate_certs'),
    ({'docker_host': 'unix:///var/run/docker.sock', 'tls': True}, 'need a tcp:// docker_host'),
    ({'docker_host': 'tcp://manager:2376', 'tls': True, 'client_key': '/key.pem'},
     'client_cert and client_key go together; only client_key'),
    ({'docker_host': 'tcp://manager:2376', 'validate_certs': True, 'ca_path': '/nowhere/ca.pem'},
     'TLS file(s) not found: ca_path /nowhere/ca.pem'),
])
def test_tls_options_that_cannot_work_are_refused_with_what_to_set(monkeypatch, options, message):
    with pytest.raises(ss.SwarmError, match=message.replace('(', r'\(').replace(')', r'\)')):
        ss.client_kwargs(validated(options, monkeypatch), environ={})


def test_client_cert_without_key_is_refused_by_the_argument_spec():
    assert ss.DOCKER_REQUIRED_TOGETHER == [['client_cert', 'client_key']]


def test_hostname_adapter_checks_the_certificate_for_tls_hostname():
    adapter = ss.HostnameAdapter('manager.example.org')
    pool_kw = adapter.poolmanager.connection_pool_kw
    assert pool_kw['assert_hostname'] == 'manager.example.org'
    assert pool_kw['server_hostname'] == 'manager.example.org'


def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('options, hint', [
    ({}, 'needs TLS: set tls or validate_certs'),
    ({'api_version': '1.45'}, 'needs TLS: set tls or validate_certs'),
    ({'tls': True}, 'does it need TLS'),
])
def test_an_unreachable_engine_fails_with_what_to_check(monkeypatch, options, hint):
    params = validated(dict(options, docker_host='tcp://127.0.0.1:%d' % closed_port(), timeout=5), monkeypatch)
    with pytest.raises(ss.SwarmError) as error:
        ss.get_client(params, environ={})
    assert str(error.value).startswith('Cannot connect to the Docker engine at tcp://127.0.0.1:')
    assert hint in str(error.value)


def test_a_missing_socket_says_to_run_on_a_manager(monkeypatch, tmp_path):
    params = validated({'docker_host': 'unix://%s' % (tmp_path / 'docker.sock')}, monkeypatch)
    with pytest.raises(ss.SwarmError, match='Is the Docker engine running on this host'):
        ss.get_client(params, environ={})
