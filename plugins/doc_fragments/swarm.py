# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Options and attributes shared by the boxoffice.pretix modules.

DOCUMENTATION holds the Docker connection options that
plugins/module_utils/swarm_services.py (DOCKER_COMMON_ARGS, get_client) honours; a module that
talks to Docker extends it and documents only its own options. ATTRIBUTES describes the
attributes every module declares, so a module only says how far it supports each one;
READ_ONLY says it for a module that changes nothing.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r'''
options:
  docker_host:
    description:
      - URL or Unix socket of the Docker API of a Swarm manager, for example
        C(unix:///var/run/docker.sock) or C(tcp://manager:2376).
      - A C(tcp://) URL is plain HTTP unless O(tls) or O(validate_certs) is set. An engine that
        listens on Docker's TLS port 2376 needs them, usually with O(ca_path), O(client_cert)
        and O(client_key).
      - If not given, the C(DOCKER_HOST) environment variable is used, then the default.
    type: str
    default: unix:///var/run/docker.sock
    aliases: [docker_url]
  tls:
    description:
      - Encrypt the connection with TLS without verifying the engine's certificate.
      - O(validate_certs) takes precedence when it is set as well.
      - If not given, the C(DOCKER_TLS) environment variable is used, then the default.
    type: bool
    default: false
  validate_certs:
    description:
      - Encrypt the connection with TLS and verify the engine's certificate against O(ca_path)
        (or the system's CA bundle when O(ca_path) is not given).
      - If not given, the C(DOCKER_TLS_VERIFY) environment variable is used, then the default.
    type: bool
    default: false
    aliases: [tls_verify]
  ca_path:
    description:
      - CA certificate file that signed the engine's certificate.
      - If not given and C(DOCKER_CERT_PATH) is set, C(ca.pem) in that directory is used.
    type: path
    aliases: [ca_cert, tls_ca_cert]
  client_cert:
    description:
      - Client certificate file to present to the engine; requires O(client_key).
      - If not given and C(DOCKER_CERT_PATH) is set, C(cert.pem) in that directory is used.
    type: path
    aliases: [tls_client_cert]
  client_key:
    description:
      - Private key file of O(client_cert).
      - If not given and C(DOCKER_CERT_PATH) is set, C(key.pem) in that directory is used.
    type: path
    aliases: [tls_client_key]
  tls_hostname:
    description:
      - Name the engine's certificate must carry, when it differs from the host in O(docker_host)
        (for example an IP address in O(docker_host) and a DNS name in the certificate).
      - Only used with O(validate_certs).
      - If not given, the C(DOCKER_TLS_HOSTNAME) environment variable is used, then the host of
        O(docker_host).
    type: str
  api_version:
    description:
      - Docker API version to speak, for example C(1.45). V(auto) uses the engine's version.
      - If not given, the C(DOCKER_API_VERSION) environment variable is used, then the default.
    type: str
    default: auto
    aliases: [docker_api_version]
  timeout:
    description:
      - Seconds to wait for a response to one Docker API call.
      - This is not how long a module waits for Swarm to converge; that is the module's own
        O(wait_timeout) where it has one.
      - If not given, the C(DOCKER_TIMEOUT) environment variable is used, then the default.
    type: int
    default: 60
requirements:
  - docker (the Docker SDK for Python) >= 7.0.0
notes:
  - The connection options follow M(community.docker.docker_swarm_service) and the C(DOCKER_*)
    variables of the Docker CLI, so the same environment or C(module_defaults) serves both.
'''

    ATTRIBUTES = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return the changed status it predicts without changing anything.
  diff_mode:
    description: Returns details on what changed (or would change in check mode) when run in diff mode.
  idempotent:
    description:
      - Run twice in a row outside check mode with the same arguments, the second run reports no change.
      - This assumes nothing else changed the system in between.
'''

    # With ATTRIBUTES, for a module that only reads: it supports check mode by changing nothing.
    READ_ONLY = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - The module changes nothing, so it does the same in check mode.
  diff_mode:
    support: N/A
    details:
      - The module changes nothing.
  idempotent:
    support: full
    details:
      - The module changes nothing.
'''
