"""The pretix image's healthcheck for a web task, run in the deployed pretix image.

A web task whose gunicorn is saturated by buyers must stay healthy (Swarm would otherwise kill
it in the middle of a rush); one that refuses connections or answers with an error must not.
Port 8000 is played by small servers started in the container, so each case is exact.
"""

import pytest

from conftest import deployed_service

PROBE = '/usr/local/bin/pretix-healthcheck'
PYTHON = '/opt/pretix/venv/bin/python'
# Accepts connections (the kernel completes them into the backlog) and never answers,
# as a gunicorn whose workers are all busy.
SATURATED = 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",8000)); s.listen(64); time.sleep(60)'
# Answers every request with 503, as pretix when its database is unreachable.
FAILING = ('import http.server as h\n'
           'class H(h.BaseHTTPRequestHandler):\n'
           '    def do_GET(self): self.send_error(503)\n'
           'h.HTTPServer(("127.0.0.1",8000),H).serve_forever()')


@pytest.fixture(scope='module')
def pretix_image(docker_client):
    return deployed_service(docker_client, 'pretix-web')['Spec']['TaskTemplate']['ContainerSpec']['Image']


def probe_web_task(docker_client, image, server):
    """Exit status and output of the healthcheck in a web-mode container running `server` on port 8000."""
    script = 'echo web > /tmp/pretix-mode\n'
    if server:
        script += '%s -c \'%s\' & sleep 2\n' % (PYTHON, server.replace("'", "'\\''"))
    script += '%s; echo "rc=$?"' % PROBE
    output = docker_client.containers.run(image, ['-c', script], entrypoint='/bin/sh', remove=True,
                                          network_mode='none', stderr=True).decode()
    return int(output.rsplit('rc=', 1)[1]), output


@pytest.mark.parametrize('server, healthy, says', [
    (SATURATED, True, 'busy'),
    (FAILING, False, '503'),
    (None, False, 'does not accept connections'),
], ids=['saturated', 'answers-503', 'nothing-listening'])
def test_web_healthcheck(docker_client, pretix_image, server, healthy, says):
    rc, output = probe_web_task(docker_client, pretix_image, server)
    assert (rc == 0) is healthy, output
    assert says in output
