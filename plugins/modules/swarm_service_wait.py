#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: swarm_service_wait
short_description: Wait until a Docker Swarm service has converged or a Swarm job's run has finished
version_added: 0.1.0
description:
  - Changes nothing; reads a service and its tasks until they reach the wanted state, in check
    mode as well.
  - For a replicated or global service, waits until its replicas run under the same rule as
    M(boxoffice.pretix.swarm_service_scale), and with O(rollout) until its rolling update has
    completed. A pause or rollback of the update fails the module.
  - For a job (C(replicated-job) or C(global-job)), waits until the job's newest run has
    completed or failed. Swarm starts a new run whenever the job's service is updated and
    numbers the runs (C(JobStatus.JobIteration)), and each task carries the number of its run;
    so tasks of earlier runs never count, and with O(previous_run) a run must be newer than
    the one read before the change.
  - A run is complete once C(TotalCompletions) of its tasks (for a global job, all of them)
    have completed. It has failed when a task failed or was rejected and the restart
    condition of the job is C(none); under another condition Swarm retries the task and the
    module waits on, up to O(wait_timeout).
  - The module fails when the run has failed, unless O(wait=false).
  - With O(wait=false) it only reports the state, also of a service that does not exist
    (RV(exists)), for example to record the run before a change.
  - Must run on a Swarm manager (or point O(docker_host) at one).
author:
  - boxoffice.pretix engineers (!UNKNOWN)
extends_documentation_fragment:
  - boxoffice.pretix.swarm
  - boxoffice.pretix.swarm.attributes
  - boxoffice.pretix.swarm.read_only
options:
  name:
    description:
      - Full name of the service or job.
    type: str
    required: true
    aliases: [service]
  previous_run:
    description:
      - For a job, the number of its run before the caller's change (RV(run.iteration) of an
        earlier call with O(wait=false)). Only a newer run is waited for, so a run that finished
        before the change is never taken for the new one.
      - Without it the newest run is waited for, which is the new one when the change has been
        made through the Docker API of a Swarm manager.
    type: int
  rollout:
    description:
      - For a replicated or global service that was just updated, also wait until Swarm's
        rolling update has completed, and fail when Swarm paused it or rolled it back, even if
        the rollback ended before the module ran.
    type: bool
    default: false
  wait:
    description:
      - Wait for the service to converge or for the run to finish. Without it, report the
        current state and never fail on it.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait before failing.
      - O(timeout) is another thing, the limit of each Docker API call.
    type: int
    default: 300
seealso:
  - module: boxoffice.pretix.swarm_service_scale
  - module: community.docker.docker_swarm_service
'''

EXAMPLES = r'''
- name: Read the migration job's newest run before it is redefined
  boxoffice.pretix.swarm_service_wait:
    name: pretix-migrate
    wait: false
  register: migrate_before

- name: Redefine the job, which starts a new run
  community.docker.docker_swarm_service:
    name: pretix-migrate
    image: registry.example.org/pretix:2025.1
    mode: replicated-job
    replicas: 1
    args: [migrate]
    restart_config:
      condition: none
  register: migrate_job

- name: Wait until the new run has completed; fail when it failed
  boxoffice.pretix.swarm_service_wait:
    name: pretix-migrate
    previous_run: "{{ migrate_before.run.iteration | default(omit) }}"
    wait_timeout: 1200
  when: migrate_job is changed

- name: Wait until a service that was just updated runs its new spec
  boxoffice.pretix.swarm_service_wait:
    name: pretix-web
    rollout: true
'''

RETURN = r'''
exists:
  description: Whether the service exists (false only with O(wait=false)).
  returned: always
  type: bool
  sample: true
mode:
  description: C(replicated), C(global), C(replicated-job) or C(global-job).
  returned: when the service exists
  type: str
  sample: replicated-job
desired:
  description: Replicas the service wants (for a global service, the tasks Swarm wants on ready nodes).
  returned: for replicated and global services
  type: int
  sample: 3
running_tasks:
  description: Running tasks Swarm still wants on ready nodes, at the end.
  returned: for replicated and global services
  type: int
  sample: 3
run:
  description: The job's newest run, at the end.
  returned: for jobs
  type: dict
  contains:
    iteration:
      description: Number of the run; every update of the job raises it.
      type: int
      sample: 7
    state:
      description: C(pending) (no task yet), C(running), C(complete) or C(failed).
      type: str
      sample: complete
    completed:
      description: Tasks of the run that completed.
      type: int
      sample: 1
    wanted:
      description: Completed tasks the run needs.
      type: int
      sample: 1
    active:
      description: Tasks of the run that are not finished.
      type: int
      sample: 0
    task_id:
      description: ID of the run's newest task; null before it has one.
      type: str
      sample: kq4s9bz0mv2tq6d0l3qzj8x0m
    errors:
      description: The run's failed or rejected tasks with their errors.
      type: list
      elements: str
      sample: ["task kq4s9bz0mv2t failed: task: non-zero exit (1)"]
seconds:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 41.5
'''

from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    JOB_MODES,
    DockerException,
    NotFound,
    SwarmError,
    count_running,
    desired_tasks,
    get_client,
    job_run,
    ready_node_ids,
    service_mode,
    service_tasks,
    swarm_module,
    wait_job_run,
    wait_service,
)


def wait_for(module, client):
    """Return the module's result for the service in module.params; raise SwarmError on failure."""
    params = module.params
    try:
        service = client.api.inspect_service(params['name'])
    except NotFound:
        if params['wait']:
            raise SwarmError('Service %s does not exist; nothing to wait for.' % params['name'])
        return dict(exists=False, seconds=0.0)
    mode = service_mode(service['Spec'])[0]
    result = dict(exists=True, mode=mode, seconds=0.0)
    if mode in JOB_MODES:
        if not params['wait']:
            result['run'] = job_run(service, service_tasks(client, service['ID']))
            return result
        result['run'], result['seconds'] = wait_job_run(client, service['ID'], params['wait_timeout'],
                                                        previous_run=params['previous_run'])
        return result
    tasks = service_tasks(client, service['ID'])
    ready = ready_node_ids(client)
    result.update(desired=desired_tasks(service, tasks, ready), running_tasks=count_running(tasks, ready))
    if params['wait']:
        result['running_tasks'], result['seconds'] = wait_service(
            client, service, result['desired'], params['wait_timeout'], rollout=params['rollout'],
            follow_rescale=True)
    return result


def main():
    argument_spec = dict(
        name=dict(type='str', required=True, aliases=['service']),
        previous_run=dict(type='int'),
        rollout=dict(type='bool', default=False),
    )
    module = swarm_module(argument_spec)
    if module.params['wait_timeout'] < 0:
        module.fail_json(msg='wait_timeout must be 0 or more, got %d.' % module.params['wait_timeout'])

    name = module.params['name']
    try:
        result = wait_for(module, get_client(module.params))
    except (SwarmError, DockerException) as exc:
        module.fail_json(msg=str(exc), changed=False)
    run = result.get('run') or {}
    if module.params['wait'] and run.get('state') == 'failed':
        module.fail_json(msg='Run %s of job %s failed: %s. See `docker service logs %s`.'
                         % (run['iteration'], name, '; '.join(run['errors']), name), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
