"""The nginx role's configuration as nginx will read it: rendered with Ansible from the role's
template and defaults, then parsed, so the TLS settings and the security headers are checked in
every location that answers on HTTPS, with nginx's add_header inheritance applied (a location
with an add_header of its own drops every add_header of its server). No Docker needed.
"""

import os
import re
import shlex

import pytest

from conftest import REPO_ROOT
from rendering import render

# Mozilla's intermediate configuration, TLS 1.2: its forward-secret AEAD suites (the DHE ones
# need a DH parameter file and are left out on purpose, see roles/nginx/defaults/main.yml).
MOZILLA_INTERMEDIATE_ECDHE = [
    'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
]
# What pretix's nginx example adds, and the HSTS the role always sent.
HEADERS = {'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'same-origin',
           'Strict-Transport-Security': 'max-age=31536000'}


class Block:
    """One nginx block: its head (`server`, `location /media/`), directives and child blocks."""

    def __init__(self, head):
        self.head, self.directives, self.children = head, [], []

    def get(self, name):
        return [args for directive, args in self.directives if directive == name]

    def find(self, name):
        return [child for child in self.children if child.head[0] == name]


def parse(text):
    """The configuration as a tree of Blocks (enough of nginx's syntax for this template)."""
    lexer = shlex.shlex(re.sub(r'#[^\n]*', '', text), posix=True, punctuation_chars='{};')
    lexer.wordchars += '$/:.*=-^~+,@!?()[]\'|\\'
    lexer.whitespace_split = True
    root, stack, words = Block(['main']), [], []
    stack.append(root)
    for token in lexer:
        if token == '{':
            child = Block(words)
            stack[-1].children.append(child)
            stack.append(child)
            words = []
        elif token == '}':
            stack.pop()
        elif token == ';':
            stack[-1].directives.append((words[0], words[1:]))
            words = []
        else:
            words.append(token)
    assert len(stack) == 1 and not words, 'unbalanced configuration'
    return root


def https_server(conf):
    [http] = conf.find('http')
    servers = [s for s in http.find('server') if any('ssl' in args for args in s.get('listen'))]
    assert len(servers) == 1
    return http, servers[0]


def maps(http):
    """{variable: value when the upstream sent no such header} of the http block's maps."""
    result = {}
    for block in http.find('map'):
        source, variable = block.head[1:]
        assert source.startswith('$upstream_http_'), block.head
        result[variable] = dict((d, args[0]) for d, args in block.directives).get('')
    return result


def effective_headers(server, location, http):
    """{header: value sent on a response without that header from pretix} in a location."""
    own = location.get('add_header')
    chosen = own if own else server.get('add_header')
    values = maps(http)
    headers = {}
    for args in chosen:
        name, value = args[0], args[1]
        headers[name] = (values.get(value, '') if value.startswith('$') else value, 'always' in args[2:])
    return headers


def missing_headers(conf):
    """['<location>: <header>' ...] for every HTTPS location lacking a security header."""
    http, server = https_server(conf)
    problems = []
    for location in server.find('location'):
        headers = effective_headers(server, location, http)
        for name, value in HEADERS.items():
            if headers.get(name) != (value, True):
                problems.append('%s: %s' % (' '.join(location.head[1:]), name))
    return problems


@pytest.fixture(scope='module')
def conf(tmp_path_factory):
    return parse(render(tmp_path_factory.mktemp('nginx'), 'nginx', ['nginx.conf.j2'])['nginx.conf.j2'])


def test_tls_is_mozilla_intermediate(conf):
    dummy, server = https_server(conf)
    assert server.get('ssl_protocols') == [['TLSv1.2', 'TLSv1.3']]
    [[ciphers]] = server.get('ssl_ciphers')
    assert ciphers.split(':') == MOZILLA_INTERMEDIATE_ECDHE
    assert server.get('ssl_prefer_server_ciphers') == [['off']]
    assert server.get('ssl_session_tickets') == [['off']]


def test_every_https_location_sends_the_security_headers(conf):
    dummy, server = https_server(conf)
    served = {' '.join(location.head[1:]) for location in server.find('location')}
    # The ones the issue is about: uploads, static files and the proxied shop.
    assert {'/', '/static/', '/media/'} <= served
    assert missing_headers(conf) == []


def test_the_check_catches_a_location_that_drops_the_servers_headers():
    """nginx's inheritance rule: Cache-Control alone in /static/ hides the server's headers."""
    text = '''http {
        map $upstream_http_x_content_type_options $nosniff { "" "nosniff"; default ""; }
        server {
            listen 443 ssl;
            add_header X-Content-Type-Options $nosniff always;
            add_header Referrer-Policy same-origin always;
            add_header Strict-Transport-Security max-age=31536000 always;
            location /media/ { alias /data/media/; }
            location /static/ { add_header Cache-Control "public"; }
        }
    }'''
    assert missing_headers(parse(text)) == [
        '/static/: X-Content-Type-Options', '/static/: Referrer-Policy', '/static/: Strict-Transport-Security']


def test_pretix_keeps_a_header_it_sets_itself(conf):
    """Each header's value comes from a map over pretix's own header: empty when pretix sent one."""
    http, dummy = https_server(conf)
    for block in http.find('map'):
        values = dict((d, args[0]) for d, args in block.directives)
        assert values['default'] == '', block.head


def test_the_images_fallback_config_serves_nothing_but_the_probe():
    """The image's own nginx.conf only answers the health probe on loopback, so it has no TLS or
    headers that could drift from the role's template."""
    with open(os.path.join(REPO_ROOT, 'roles', 'nginx', 'files', 'image', 'nginx.conf'), encoding='utf-8') as handle:
        [http] = parse(handle.read()).find('http')
    [server] = http.find('server')
    assert server.get('listen') == [['127.0.0.1:8081']]
    assert [location.head[1:] for location in server.find('location')] == [['=', '/nginx-health']]
