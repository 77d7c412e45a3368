"""The pretix image's healthcheck and cron loop, run in the deployed pretix image.

A web task whose gunicorn is saturated by buyers must stay healthy (Swarm would otherwise kill
it in the middle of a rush); one that refuses connections or answers with an error must not.
Port 8000 is played by small servers started in the container, so each case is exact.

The cron task runs runperiodic again and again in one process (boxoffice_cron): a run that
fails must leave the loop alive and write no heartbeat, so that the healthcheck, which reads
the heartbeat, reports a cron task whose runs keep failing.
"""
import time

import pytest

from conftest import deployed_image

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
    return deployed_image(docker_client, 'pretix-web')


def probe_web_task(docker_client, image, server):
    """Exit status and output of the healthcheck in a web-mode container running `server` on port 8000."""
    script = 'echo web > /tmp/pretix-mode\n'
    if server:
        script += '%s -c \'%s\' & sleep 2\n' % (PYTHON, server.replace("'", "'\\''"))
    script += '%s; echo "rc=$?"' % PROBE
    output = docker_client.containers.run(image, ['-c', script], entrypoint='/bin/sh', remove=True,
                                          network_mode='none', stderr=True).decode()
    return int(output.rsplit('rc=', 1)[1]), output


@pytest.mark.parametrize('age, healthy', [(None, False), (5, True), (120, False)],
                         ids=['no-heartbeat', 'fresh-heartbeat', 'stale-heartbeat'])
def test_worker_healthcheck_reads_the_consumer_heartbeat(docker_client, pretix_image, age, healthy):
    """A worker is healthy only while its consumer's heartbeat file is younger than 90 s."""
    script = 'echo worker > /tmp/pretix-mode\n'
    if age is not None:
        script += 'touch -d "-%d seconds" /tmp/pretix-worker-heartbeat\n' % age
    script += '%s; echo "rc=$?"' % PROBE
    output = docker_client.containers.run(pretix_image, ['-c', script], entrypoint='/bin/sh', remove=True,
                                          network_mode='none', stderr=True).decode()
    assert (int(output.rsplit('rc=', 1)[1]) == 0) is healthy, output


def test_the_deployed_worker_beats(docker_client):
    """The running worker's consumer rewrites its heartbeat (every 2 s), so its probe passes."""
    workers = docker_client.containers.list(filters={'label': 'com.docker.swarm.service.name=pretix-worker'})
    assert workers, 'no running pretix-worker container'
    age = workers[0].exec_run(['sh', '-c', 'echo $(( $(date +%s) - $(stat -c %Y /tmp/pretix-worker-heartbeat) ))'])
    assert age.exit_code == 0 and int(age.output) < 30, age.output
    assert workers[0].exec_run([PROBE]).exit_code == 0


@pytest.mark.parametrize('server, healthy, says', [
    (SATURATED, True, 'busy'),
    (FAILING, False, '503'),
    (None, False, 'does not accept connections'),
], ids=['saturated', 'answers-503', 'nothing-listening'])
def test_web_healthcheck(docker_client, pretix_image, server, healthy, says):
    rc, output = probe_web_task(docker_client, pretix_image, server)
    assert (rc == 0) is healthy, output
    assert says in output


def run_cron(docker_client, image, environment, seconds):
    """A cron-mode container of `image` (no network, runs every 2 s) for `seconds`: (its log,
    its heartbeats as read once a second, the healthcheck's exit status and the command lines
    of its processes at the end)."""
    container = docker_client.containers.run(
        image, ['cron'], environment=dict(environment, PRETIX_CRON_INTERVAL='2'),
        network_mode='none', detach=True)
    try:
        heartbeats = set()
        for _ in range(seconds):
            time.sleep(1)
            exit_code, output = container.exec_run(['cat', '/tmp/pretix-cron-heartbeat'])
            if exit_code == 0:
                heartbeats.add(output.decode().strip())
        container.reload()
        assert container.status == 'running', container.logs().decode()[-3000:]
        health = container.exec_run([PROBE]).exit_code
        processes = [process[-1] for process in container.top()['Processes']]
        return container.logs().decode(), heartbeats, health, processes
    finally:
        container.remove(force=True)


def test_cron_runs_again_in_the_same_process(docker_client, pretix_image):
    # Without a pretix.cfg the image's pretix keeps its cache in memory, so runperiodic succeeds.
    log, heartbeats, health, processes = run_cron(docker_client, pretix_image, {}, 25)
    assert len(heartbeats) >= 2, log[-3000:]
    assert health == 0
    assert 'runperiodic failed' not in log
    assert any('python -m boxoffice_cron' in command for command in processes), processes


def test_cron_keeps_running_when_runs_fail_and_writes_no_heartbeat(docker_client, pretix_image):
    # runperiodic stops at its first step, marking itself in the cache, when Redis cannot be reached.
    log, heartbeats, health, _ = run_cron(docker_client, pretix_image,
                                       {'PRETIX_REDIS_LOCATION': 'redis://redis-unreachable:6379/0'}, 25)
    assert log.count('runperiodic failed') >= 2, log[-3000:]
    assert heartbeats == set()
    assert health == 1
