# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared Swarm service code for boxoffice.pretix.swarm_service_scale and swarm_service_heal.

Both modules must agree on what "converged" means, so the rule lives here once. It follows the
Docker CLI (cli/command/service/progress): a replica counts only if its task is running, is
still wanted (desired state running) and sits on a node the managers see as ready. A service
is converged when that count equals the wanted replicas and stays there for the service's
update monitor window; an update that pauses or rolls back is a failure, not a slow success.
A rollback is reported once Swarm has finished it (completed or paused), so the caller does not
go on while the service is still moving.
"""

from __future__ import annotations

import datetime
import re
import time
import traceback

try:
    import docker
    from docker.errors import DockerException, NotFound  # pylint: disable=unused-import  # re-exported for the modules
    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError:
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()

    class DockerException(Exception):
        """Stand-in so callers can name the exception without the SDK installed."""

    class NotFound(DockerException):
        """Stand-in for docker.errors.NotFound without the SDK installed."""


DOCKER_REQUIREMENT = 'docker (the Docker SDK for Python, tested with docker==7.2.0)'

# Docker's own default for UpdateConfig.Monitor when the spec leaves it out.
DEFAULT_MONITOR_SECONDS = 5.0
POLL_SECONDS = 0.5

# A paused update or a rollback in progress blocks every later change to the service, so they
# fail whenever they are seen. A completed rollback only says something about *our* change if
# it appeared after we made it; a stale one from an earlier deploy must not fail a later scale.
ALWAYS_FATAL_UPDATE_STATES = ('paused', 'rollback_paused', 'rollback_started')
FRESH_FATAL_UPDATE_STATES = ('rollback_completed',)
# Swarm is still rolling back: the failure is certain, how the rollback ends (the old spec runs
# again, or the rollback pauses) is not. It is reported once the state moves on, or at timeout.
ROLLING_BACK_STATE = 'rollback_started'
# Terminal task states that mean the task's container did not do its job.
FAILED_STATES = ('failed', 'rejected')

COMMON_ARGUMENT_SPEC = dict(
    docker_host=dict(type='str'),
    timeout=dict(type='int', default=300),
    wait=dict(type='bool', default=True),
)


class SwarmError(Exception):
    """A problem to report through fail_json; the message is meant for the operator."""


def get_client(docker_host=None):
    """Return a Docker SDK client for docker_host, or configured from DOCKER_* like the CLI."""
    try:
        if docker_host:
            return docker.DockerClient(base_url=docker_host)
        return docker.from_env()
    except DockerException as exc:
        raise SwarmError(
            'Cannot connect to the Docker engine (%s): %s. Run this on a Swarm manager or set '
            'docker_host.' % (docker_host or 'DOCKER_HOST or the default socket', exc))


def service_mode(spec):
    """Return ('replicated', replicas) or (mode name, None) for global and job services."""
    mode = spec.get('Mode') or {}
    if 'Replicated' in mode:
        return 'replicated', int((mode['Replicated'] or {}).get('Replicas', 1))
    for name, key in (('global', 'Global'), ('replicated-job', 'ReplicatedJob'),
                      ('global-job', 'GlobalJob')):
        if key in mode:
            return name, None
    return 'unknown', None


def monitor_seconds(spec):
    monitor_ns = (spec.get('UpdateConfig') or {}).get('Monitor')
    return monitor_ns / 1e9 if monitor_ns else DEFAULT_MONITOR_SECONDS


def parse_timestamp(value):
    """Parse Docker's RFC 3339 timestamps (nanoseconds, Z) into aware datetimes."""
    if not value:
        return None
    match = re.match(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$', value)
    if not match:
        return None
    base, fraction, zone = match.groups()
    parsed = datetime.datetime.strptime(base, '%Y-%m-%dT%H:%M:%S')
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[:6].ljust(6, '0')))
    if zone == 'Z':
        offset = datetime.timedelta(0)
    else:
        offset = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        if zone[0] == '-':
            offset = -offset
    return parsed.replace(tzinfo=datetime.timezone(offset))


def list_services(client):
    return client.api.services()


def ready_node_ids(client):
    return set(node['ID'] for node in client.api.nodes()
               if (node.get('Status') or {}).get('State') == 'ready')


def service_tasks(client, service_id):
    return client.api.tasks(filters={'service': service_id})


def count_running(tasks, ready_nodes):
    """The Docker CLI's convergence count: running, still wanted, on a ready node."""
    return sum(1 for task in tasks
               if task.get('DesiredState') == 'running'
               and (task.get('Status') or {}).get('State') == 'running'
               and task.get('NodeID') in ready_nodes)


def count_running_containers(tasks, ready_nodes):
    """Tasks whose container runs on a ready node, also those already told to stop.

    This is what `docker service ls` shows as running: a task told to stop keeps its container
    until the container exits.
    """
    return sum(1 for task in tasks
               if (task.get('Status') or {}).get('State') == 'running'
               and task.get('NodeID') in ready_nodes)


def task_error(task):
    status = task.get('Status') or {}
    return status.get('Err') or status.get('Message') or 'no error message'


def describe_failed_task(task):
    """One failed or rejected task for an error message: its short ID, state and error."""
    return 'task %s %s: %s' % (task['ID'][:12], task['Status']['State'], task_error(task))


def newest_task_errors(tasks, name, count=3):
    """The errors of the newest failed or rejected tasks, for a message an operator can act on."""
    failed = sorted((task for task in tasks if (task.get('Status') or {}).get('State') in FAILED_STATES),
                    key=lambda task: task.get('UpdatedAt') or '', reverse=True)[:count]
    if not failed:
        return 'Look at `docker service ps --no-trunc %s` for the task errors.' % name
    return 'Newest task errors: %s.' % '; '.join(describe_failed_task(task) for task in failed)


def update_service_spec(client, service, spec):
    """Write spec back as the whole new spec of service (nothing merged, nothing defaulted).

    The SDK's high-level Service.update() rebuilds the spec from keyword arguments and drops what
    it does not know about; passing every part of the inspected spec keeps the service exactly
    as deployed apart from what the caller changed.
    """
    client.api.update_service(
        service['ID'], service['Version']['Index'],
        task_template=spec.get('TaskTemplate'),
        name=spec.get('Name'),
        labels=spec.get('Labels'),
        mode=spec.get('Mode'),
        update_config=spec.get('UpdateConfig'),
        rollback_config=spec.get('RollbackConfig'),
        endpoint_spec=spec.get('EndpointSpec'),
    )


def update_status_problem(update_status, before):
    """Return an error message if the service's UpdateStatus means the change failed."""
    if not update_status:
        return None
    state = update_status.get('State')
    fresh = update_status != before
    if state in ALWAYS_FATAL_UPDATE_STATES or (fresh and state in FRESH_FATAL_UPDATE_STATES):
        return 'update status is %s: %s' % (state, update_status.get('Message') or 'no message')
    return None


def wait_converged(client, service_id, replicas, timeout, update_status_before=None,
                   require_update_completed=False, hold_seconds=0, known_task_ids=None,
                   exact=False):
    """Wait until service_id has `replicas` counted tasks for a whole monitor window.

    update_status_before is the service's UpdateStatus before the caller changed it, so a
    rollback left over from an earlier deploy is told apart from one our change caused.
    With require_update_completed (after a forced redeploy) the rolling update must also have
    finished, otherwise old tasks could still be counted as the converged state.
    hold_seconds lengthens the window the count must hold when it is longer than the monitor
    window. With known_task_ids (the task IDs from before the change), any other task that fails
    or is rejected fails the wait at once: the change's own tasks are failing. With exact, tasks
    told to stop must also be gone: no more containers run than `replicas`.
    A rollback in progress fails the wait once it has completed or paused, so the message names
    how it ended; if it is still under way at the timeout, the message says so.

    Returns (running_tasks, seconds). Raises SwarmError on failure or timeout.
    """
    started = time.monotonic()
    deadline = started + timeout
    converged_since = None
    running = 0
    while True:
        service = client.api.inspect_service(service_id)
        name = service['Spec']['Name']
        update_status = service.get('UpdateStatus')
        problem = update_status_problem(update_status, update_status_before)
        rolling_back = bool(problem) and update_status.get('State') == ROLLING_BACK_STATE
        tasks = service_tasks(client, service_id)
        if problem and not rolling_back:
            raise SwarmError('service %s did not converge: %s. %s'
                             % (name, problem, newest_task_errors(tasks, name)))
        if known_task_ids is not None:
            failed = sorted(describe_failed_task(task) for task in tasks
                            if task['ID'] not in known_task_ids
                            and (task.get('Status') or {}).get('State') in FAILED_STATES)
            if failed:
                raise SwarmError('service %s did not converge: its new tasks fail (%s)'
                                 % (name, '; '.join(failed)))
        if rolling_back:
            converged_since = None
            if time.monotonic() >= deadline:
                raise SwarmError('service %s did not converge within %ss: Swarm was still rolling it back '
                                 '(%s). %s' % (name, timeout, problem, newest_task_errors(tasks, name)))
            time.sleep(POLL_SECONDS)
            continue
        ready = ready_node_ids(client)
        running = count_running(tasks, ready)
        containers = count_running_containers(tasks, ready) if exact else running
        update_done = (not require_update_completed or not update_status
                       or update_status == update_status_before
                       or update_status.get('State') == 'completed')
        hold = max(monitor_seconds(service['Spec']), hold_seconds)
        now = time.monotonic()
        if running == replicas and containers == replicas and update_done:
            if converged_since is None:
                converged_since = now
            if now - converged_since >= hold:
                return running, round(now - started, 2)
        else:
            converged_since = None
        if now >= deadline:
            unfinished = []
            if not update_done:
                unfinished.append('rolling update not finished')
            if containers > running:
                unfinished.append('%d tasks told to stop still running' % (containers - running))
            if running == replicas and containers == replicas and update_done:
                unfinished.append('running for less than the required %ss' % round(hold, 1))
            raise SwarmError(
                'service %s did not converge within %ss: %d of %d replicas running%s. Look at '
                '`docker service ps --no-trunc %s` for the task errors.'
                % (name, timeout, running, replicas,
                   ''.join(', ' + item for item in unfinished), name))
        time.sleep(POLL_SECONDS)
