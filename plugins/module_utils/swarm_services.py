# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared Docker and Swarm code of the boxoffice.pretix modules.

The connection: DOCKER_COMMON_ARGS are the options of the `boxoffice.pretix.swarm` doc fragment,
and get_client() is the one place that turns them into a Docker SDK client.

Convergence: swarm_service_scale, swarm_service_heal and swarm_service_wait must agree on what "converged" means, so the rule lives here once. It follows the
Docker CLI (cli/command/service/progress): a replica counts only if its task is running, is
still wanted (desired state running) and sits on a node the managers see as ready. A service
is converged when that count equals the wanted replicas and stays there for the service's
update monitor window; an update that pauses or rolls back is a failure, not a slow success.
A rollback is reported once Swarm has finished it (completed or paused), so the caller does not
go on while the service is still moving.
"""

from __future__ import annotations

import datetime
import os
import re
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

try:
    import docker
    import docker.tls
    from docker.errors import APIError, DockerException, NotFound, TLSParameterError  # pylint: disable=unused-import  # re-exported for the modules
    from requests.adapters import HTTPAdapter
    from requests.exceptions import RequestException
    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError:
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()
    HTTPAdapter = object

    class RequestException(Exception):
        """Stand-in for requests.exceptions.RequestException without the SDK installed."""

    class DockerException(Exception):
        """Stand-in so callers can name the exception without the SDK installed."""

    class APIError(DockerException):
        """Stand-in for docker.errors.APIError without the SDK installed."""

    class NotFound(APIError):
        """Stand-in for docker.errors.NotFound without the SDK installed."""

    class TLSParameterError(DockerException):
        """Stand-in for docker.errors.TLSParameterError without the SDK installed."""


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
# What to do when another writer changes a count that a module waits for.
RESCALE_HINT = ('A service that an autoscaler rule scales keeps a count set by hand only within '
                'the rule\'s min and max, for its scale-down stabilisation window: scale it with '
                'swarm_service_scale and autoscale_hold, or change the rule.')

DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock'
DEFAULT_API_TIMEOUT = 60
DEFAULT_WAIT_TIMEOUT = 300

# The options of the `boxoffice.pretix.swarm` doc fragment, with the Docker CLI's variables.
DOCKER_COMMON_ARGS = dict(
    docker_host=dict(type='str', default=DEFAULT_DOCKER_HOST, aliases=['docker_url'],
                     fallback=(env_fallback, ['DOCKER_HOST'])),
    tls=dict(type='bool', default=False, fallback=(env_fallback, ['DOCKER_TLS'])),
    validate_certs=dict(type='bool', default=False, aliases=['tls_verify'],
                        fallback=(env_fallback, ['DOCKER_TLS_VERIFY'])),
    ca_path=dict(type='path', aliases=['ca_cert', 'tls_ca_cert']),
    client_cert=dict(type='path', aliases=['tls_client_cert']),
    client_key=dict(type='path', aliases=['tls_client_key']),
    tls_hostname=dict(type='str', fallback=(env_fallback, ['DOCKER_TLS_HOSTNAME'])),
    api_version=dict(type='str', default='auto', aliases=['docker_api_version'],
                     fallback=(env_fallback, ['DOCKER_API_VERSION'])),
    timeout=dict(type='int', default=DEFAULT_API_TIMEOUT, fallback=(env_fallback, ['DOCKER_TIMEOUT'])),
)
DOCKER_REQUIRED_TOGETHER = [['client_cert', 'client_key']]

# The options of the modules that wait for Swarm to converge, on top of DOCKER_COMMON_ARGS.
WAIT_ARGS = dict(
    wait=dict(type='bool', default=True),
    wait_timeout=dict(type='int', default=DEFAULT_WAIT_TIMEOUT),
)
COMMON_ARGUMENT_SPEC = dict(DOCKER_COMMON_ARGS, **WAIT_ARGS)

# Files DOCKER_CERT_PATH holds, as the Docker CLI names them.
CERT_PATH_FILES = (('ca_path', 'ca.pem'), ('client_cert', 'cert.pem'), ('client_key', 'key.pem'))
TLS_OPTIONS_HINT = ('set tls or validate_certs, with ca_path, client_cert and client_key '
                    '(or DOCKER_CERT_PATH)')


class SwarmError(Exception):
    """A problem to report through fail_json; the message is meant for the operator."""


def swarm_module(argument_spec, wait_options=True, **kwargs):
    """An AnsibleModule with the module's own options and the connection options added.

    wait_options adds `wait` and `wait_timeout` as well. Check mode is supported unless the
    caller says otherwise. Fails the module when the Docker SDK is missing.
    """
    spec = dict(argument_spec, **(COMMON_ARGUMENT_SPEC if wait_options else DOCKER_COMMON_ARGS))
    kwargs.setdefault('supports_check_mode', True)
    kwargs['required_together'] = list(kwargs.get('required_together') or []) + DOCKER_REQUIRED_TOGETHER
    module = AnsibleModule(argument_spec=spec, **kwargs)
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib(DOCKER_REQUIREMENT), exception=DOCKER_IMPORT_ERROR)
    return module


class HostnameAdapter(HTTPAdapter):
    """HTTPS adapter that checks the engine's certificate for another name than the URL's host.

    The Docker SDK (7.0 and later) verifies the URL's host only, so tls_hostname is honoured by
    this adapter mounted on the client: it sends the name for SNI and checks the certificate
    against it.
    """

    def __init__(self, hostname, **kwargs):
        self.hostname = hostname
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs['assert_hostname'] = self.hostname
        kwargs['server_hostname'] = self.hostname
        super().init_poolmanager(*args, **kwargs)


def tls_mode(params):
    """'verify', 'encrypt' or None, as validate_certs and tls ask; validate_certs wins."""
    if params.get('validate_certs'):
        return 'verify'
    if params.get('tls'):
        return 'encrypt'
    return None


def tls_files(params, environ=None):
    """The TLS file options, completed from DOCKER_CERT_PATH where they were not given."""
    environ = os.environ if environ is None else environ
    files = dict((option, params.get(option)) for option, dummy in CERT_PATH_FILES)
    cert_path = environ.get('DOCKER_CERT_PATH')
    if cert_path:
        for option, name in CERT_PATH_FILES:
            if not files[option] and os.path.exists(os.path.join(cert_path, name)):
                files[option] = os.path.join(cert_path, name)
    return files


def client_kwargs(params, environ=None):
    """Map the connection options to docker.DockerClient keyword arguments.

    Raises SwarmError when the TLS options do not fit together or name missing files.
    """
    kwargs = dict(base_url=params.get('docker_host') or DEFAULT_DOCKER_HOST,
                  version=params.get('api_version') or 'auto',
                  timeout=params.get('timeout') or DEFAULT_API_TIMEOUT)
    mode = tls_mode(params)
    files = tls_files(params, environ)
    if mode is None:
        if params.get('client_cert') or params.get('client_key') or params.get('ca_path'):
            raise SwarmError('ca_path, client_cert and client_key are only used over TLS: set tls '
                             'or validate_certs as well (docker_host %s).' % kwargs['base_url'])
        return kwargs
    if kwargs['base_url'].startswith(('unix://', 'npipe://', 'ssh://')):
        raise SwarmError('tls and validate_certs need a tcp:// docker_host, not %s.' % kwargs['base_url'])
    if bool(files['client_cert']) != bool(files['client_key']):
        raise SwarmError('client_cert and client_key go together; only %s was given (or found in '
                         'DOCKER_CERT_PATH).' % ('client_cert' if files['client_cert'] else 'client_key'))
    missing = ['%s %s' % (option, path) for option, path in sorted(files.items())
               if path and not os.path.isfile(path)]
    if missing:
        raise SwarmError('TLS file(s) not found: %s.' % ', '.join(missing))
    client_cert = (files['client_cert'], files['client_key']) if files['client_cert'] else None
    if mode == 'verify':
        kwargs['tls'] = docker.tls.TLSConfig(client_cert=client_cert, ca_cert=files['ca_path'],
                                             verify=files['ca_path'] or True)
    else:
        kwargs['tls'] = docker.tls.TLSConfig(client_cert=client_cert, verify=False)
    return kwargs


def connection_hint(params, exc):
    """What to check when the engine cannot be reached, from the options and the error text."""
    host = params.get('docker_host') or DEFAULT_DOCKER_HOST
    text = str(exc)
    if tls_mode(params) and ('SSL' in text or 'certificate' in text):
        return ('The TLS handshake failed: check that ca_path signed the engine\'s certificate, that '
                'the certificate names this host (or set tls_hostname), and that the engine accepts '
                'client_cert.')
    if host.startswith('tcp://') and not tls_mode(params):
        return ('Is the engine listening on %s without TLS? An engine on port 2376 needs TLS: %s.'
                % (host, TLS_OPTIONS_HINT))
    if host.startswith('unix://'):
        return ('Is the Docker engine running on this host, and may this user use its socket? Run the '
                'module on a Swarm manager or point docker_host at one.')
    return 'Is the engine running and reachable there, and does it need TLS (%s)?' % TLS_OPTIONS_HINT


def get_client(params, environ=None):
    """Return a docker.DockerClient built from the connection options in params.

    Talks to the engine once (its version), so a wrong host or TLS setting fails here, with a
    message that says what to check, and not in the middle of the module's work.
    """
    kwargs = client_kwargs(params, environ)
    hostname = params.get('tls_hostname') if tls_mode(params) == 'verify' else None
    try:
        if hostname:
            # The SDK reads the engine's version while it builds the client, before an adapter
            # can be mounted; so the version is read first with a client that has the adapter.
            probe = docker.APIClient(**dict(kwargs, version=docker.constants.DEFAULT_DOCKER_API_VERSION))
            probe.mount('https://', HostnameAdapter(hostname))
            if kwargs['version'] == 'auto':
                kwargs['version'] = probe.version(api_version=False)['ApiVersion']
            probe.close()
        client = docker.DockerClient(**kwargs)
        if hostname:
            client.api.mount('https://', HostnameAdapter(hostname))
        client.ping()
    except TLSParameterError as exc:
        raise SwarmError('The TLS options for %s do not fit: %s.' % (kwargs['base_url'], exc))
    except (DockerException, RequestException) as exc:
        raise SwarmError('Cannot connect to the Docker engine at %s: %s. %s'
                         % (kwargs['base_url'], exc, connection_hint(params, exc)))
    return client


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


def replicated_services(client, names, stack, action):
    """The inspected services named (<stack>_<name> with a stack), in the order asked.

    Refuses the whole request if any one is unknown or not replicated, so nothing is changed
    before every service is known to fit; action names what the caller was going to do.
    """
    by_name = dict((svc['Spec']['Name'], svc) for svc in list_services(client))
    prefix = '%s_' % stack if stack else ''
    wanted = [prefix + name for name in names]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        existing = sorted(name for name in by_name if name.startswith(prefix))
        raise SwarmError('Unknown service(s): %s. Existing services%s: %s. Nothing was changed.'
                         % (', '.join(unknown), ' in stack %s' % stack if prefix else '',
                            ', '.join(existing) or 'none'))
    not_replicated = ['%s (%s)' % (name, service_mode(by_name[name]['Spec'])[0])
                      for name in wanted if service_mode(by_name[name]['Spec'])[0] != 'replicated']
    if not_replicated:
        raise SwarmError('Only replicated services can be %s; refusing %s. Nothing was changed.'
                         % (action, ', '.join(not_replicated)))
    return [by_name[name] for name in wanted]


def engine_now(client):
    """The engine's clock, which stamped the tasks; this host's clock if the engine's is unreadable."""
    return (parse_timestamp(client.api.info().get('SystemTime'))
            or datetime.datetime.now(datetime.timezone.utc))


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


def wait_converged(client, service_id, replicas, wait_timeout, update_status_before=None,
                   require_update_completed=False, hold_seconds=0, known_task_ids=None,
                   exact=False, follow_rescale=False):
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
    A replicated service whose count another writer (an autoscaler, an operator) changes while
    waiting fails the wait at once, since `replicas` can then never be reached; with
    follow_rescale the wait takes the new count instead, for callers that wait for health and
    not for a count of their own.

    Returns (running_tasks, seconds). Raises SwarmError on failure or timeout.
    """
    started = time.monotonic()
    deadline = started + wait_timeout
    converged_since = None
    running = 0
    while True:
        service = client.api.inspect_service(service_id)
        name = service['Spec']['Name']
        mode, spec_replicas = service_mode(service['Spec'])
        if mode == 'replicated' and spec_replicas != replicas:
            if not follow_rescale:
                raise SwarmError(
                    'service %s was set to %d replicas by another writer while this waited for %d '
                    '(the autoscaler, or another run or person). %s'
                    % (name, spec_replicas, replicas, RESCALE_HINT))
            replicas, converged_since = spec_replicas, None
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
                                 '(%s). %s' % (name, wait_timeout, problem, newest_task_errors(tasks, name)))
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
                % (name, wait_timeout, running, replicas,
                   ''.join(', ' + item for item in unfinished), name))
        time.sleep(POLL_SECONDS)


def desired_tasks(service, tasks, ready_nodes):
    """Replicas a replicated service wants; for a global one, the tasks Swarm wants on ready nodes."""
    mode, replicas = service_mode(service['Spec'])
    if mode == 'global':
        return sum(1 for task in tasks
                   if task.get('DesiredState') == 'running' and task.get('NodeID') in ready_nodes)
    return replicas


def wait_service(client, service, replicas, wait_timeout, rollout=False, follow_rescale=False):
    """Wait until service runs `replicas` tasks; with rollout, also until its update completed.

    After a rollout every rollback counts, even one that finished before the wait began;
    without it only a rollback that appears while waiting does. follow_rescale as in
    wait_converged().
    """
    return wait_converged(client, service['ID'], replicas, wait_timeout,
                          update_status_before=None if rollout else service.get('UpdateStatus'),
                          require_update_completed=rollout, follow_rescale=follow_rescale)


# Job runs ------------------------------------------------------------------------------------
#
# Swarm numbers the runs of a job service: every update of the service starts a new run and
# raises Service.JobStatus.JobIteration.Index in the same write, and each task carries the
# JobIteration of the run it belongs to. So the tasks of the newest run are those with the
# service's JobIteration, and a run started by the caller's change is one whose number is above
# the number read before the change.

JOB_MODES = ('replicated-job', 'global-job')
# Task states after which the task does nothing more.
TERMINAL_STATES = ('complete', 'shutdown', 'failed', 'rejected', 'remove', 'orphaned')


def job_iteration(service):
    """The number of a job service's newest run. The Engine API leaves out an Index of 0."""
    return int((((service.get('JobStatus') or {}).get('JobIteration')) or {}).get('Index') or 0)


def task_job_iteration(task):
    """The number of the run a task belongs to; None for a task of a service that is no job."""
    if task.get('JobIteration') is None:
        return None
    return int(task['JobIteration'].get('Index') or 0)


def job_completions(spec):
    """Completed tasks a replicated job's run needs: TotalCompletions, which defaults to
    MaxConcurrent, which defaults to 1."""
    job = (spec.get('Mode') or {}).get('ReplicatedJob') or {}
    return int(job.get('TotalCompletions') or job.get('MaxConcurrent') or 1)


def job_run(service, tasks):
    """The state of the newest run of a job service, from its inspect and its task list.

    A replicated job's run is complete once TotalCompletions of its tasks completed; a global
    job's once it has tasks and all completed. It has failed when one of its tasks failed or was
    rejected and the restart policy's condition is `none` (Swarm will not retry); under another
    condition Swarm retries, and the run is still running. A run with no tasks yet is `pending`.
    """
    spec = service['Spec']
    iteration = job_iteration(service)
    run_tasks = sorted((task for task in tasks if task_job_iteration(task) == iteration),
                       key=lambda task: task.get('CreatedAt') or '', reverse=True)
    states = [(task.get('Status') or {}).get('State') for task in run_tasks]
    completed = states.count('complete')
    failed = [task for task, state in zip(run_tasks, states) if state in FAILED_STATES]
    mode = service_mode(spec)[0]
    wanted = job_completions(spec) if mode == 'replicated-job' else len(run_tasks)
    condition = ((spec.get('TaskTemplate') or {}).get('RestartPolicy') or {}).get('Condition') or 'any'
    if not run_tasks:
        state = 'pending'
    elif completed >= wanted:
        state = 'complete'
    elif failed and condition == 'none':
        state = 'failed'
    else:
        state = 'running'
    return dict(
        iteration=iteration,
        state=state,
        completed=completed,
        wanted=wanted,
        active=sum(1 for state_ in states if state_ not in TERMINAL_STATES),
        task_id=run_tasks[0]['ID'] if run_tasks else None,
        errors=[describe_failed_task(task) for task in failed],
    )


def wait_job_run(client, service_id, wait_timeout, previous_run=None):
    """Wait until the job's newest run, newer than previous_run when given, completed or failed.

    Returns (run, seconds) with run as job_run() describes it. Raises SwarmError at the timeout.
    """
    started = time.monotonic()
    deadline = started + wait_timeout
    while True:
        service = client.api.inspect_service(service_id)
        run = job_run(service, service_tasks(client, service_id))
        newer = previous_run is None or run['iteration'] > previous_run
        if newer and run['state'] in ('complete', 'failed'):
            return run, round(time.monotonic() - started, 2)
        if time.monotonic() >= deadline:
            name = service['Spec']['Name']
            if not newer:
                where = 'no run after run %s started' % previous_run
            else:
                where = 'run %s is %s with %d of %d tasks complete%s' % (
                    run['iteration'], run['state'], run['completed'], run['wanted'],
                    ' (%s)' % '; '.join(run['errors']) if run['errors'] else '')
            raise SwarmError('job %s did not finish within %ss: %s. Look at `docker service ps '
                             '--no-trunc %s` and `docker service logs %s`.'
                             % (name, wait_timeout, where, name, name))
        time.sleep(POLL_SECONDS)
