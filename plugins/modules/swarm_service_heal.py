#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: swarm_service_heal
short_description: Find unhealthy Docker Swarm services and redeploy them with a rolling force update
version_added: 0.1.0
description:
  - Inspects all Swarm services, or those of one O(stack) or carrying O(labels), and looks for
    fewer running replicas than desired, tasks stuck on their way to running for longer than
    O(recent) seconds, tasks that failed or were rejected in the last O(recent) seconds,
    restart loops (more than O(restart_threshold) such failures) and paused updates.
  - Replicas that are still starting (for less than O(recent) seconds) are not counted as
    missing, so a heal right after a deploy leaves slow-starting services alone.
  - Each unhealthy service is redeployed with a rolling force update (its
    C(TaskTemplate.ForceUpdate) counter is incremented; the rest of the spec is kept as is),
    then the module waits until it has converged under the same rule as
    M(boxoffice.pretix.swarm_service_scale) and its rolling update has completed.
  - A service that is still failing after the redeploy is reported with result C(failed) and
    the module fails, after all other services have been handled.
  - Failures older than the service's last spec update are ignored, so a service healed a
    moment ago is not redeployed again for the failures that caused the heal.
  - Job-mode services (one-shot tasks) are never redeployed. For replicated services whose
    restart condition is not C(any), a slot whose newest task completed counts as satisfied.
  - Must run on a Swarm manager (or point O(docker_host) at one).
author:
  - boxoffice.pretix engineers (!UNKNOWN)
requirements:
  - docker (Docker SDK for Python) >= 7.0.0
attributes:
  check_mode:
    support: full
    description: Reports findings and which services would be redeployed; redeploys nothing.
  diff_mode:
    support: none
    description: Findings and actions are returned in RV(services) instead.
options:
  stack:
    description:
      - Only services of this stack, recognised by the C(com.docker.stack.namespace) label
        or by the C(<stack>_) name prefix.
    type: str
  labels:
    description:
      - Only services whose spec carries all these labels with these values.
    type: dict
  recent:
    description:
      - Window in seconds in which failed or rejected tasks count as findings.
    type: int
    default: 300
  restart_threshold:
    description:
      - A service with more than this many failed or rejected tasks inside O(recent) is
        reported as a restart loop.
    type: int
    default: 3
  wait:
    description:
      - Wait for every redeployed service to converge. Without it the result of a redeployed
        service is C(redeployed) and nothing is verified.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each redeployed service to converge before it is reported failed.
    type: int
    default: 300
  docker_host:
    description:
      - Docker engine URL, for example C(unix:///var/run/docker.sock) or C(tcp://manager:2376).
      - Defaults to the C(DOCKER_HOST) environment variable, then the local socket.
    type: str
notes:
  - Swarm keeps only a few old tasks per slot (C(TaskHistoryRetentionLimit), default 5), which
    caps how many failures a restart loop can show.
seealso:
  - module: boxoffice.pretix.swarm_service_scale
'''

EXAMPLES = r'''
- name: Heal the boxoffice stack
  boxoffice.pretix.swarm_service_heal:
    stack: boxoffice

- name: Only report what would be redeployed (run with --check for the same effect)
  boxoffice.pretix.swarm_service_heal:
    labels:
      com.example.tier: app
    recent: 600
  check_mode: true
'''

RETURN = r'''
services:
  description: One entry per inspected service, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Service name.
      type: str
      sample: boxoffice_pretix-web
    desired:
      description: Replicas the service should run (for global services, tasks the orchestrator wants).
      type: int
      sample: 3
    running_tasks:
      description: Running tasks on ready nodes, after the redeploy when one was made and waited for.
      type: int
      sample: 3
    findings:
      description: What was wrong; empty for a healthy service.
      type: list
      elements: dict
      sample:
        - kind: failed_tasks
          count: 1
          detail: "task 0c4r1 failed 2026-11-26T15:02:11Z: task: non-zero exit (137)"
    action:
      description: C(none), C(redeploy) or C(would_redeploy) (check mode).
      type: str
      sample: redeploy
    result:
      description: >-
        C(healthy), C(healed), C(failed), C(redeployed) (not waited for), C(unhealthy)
        (check mode, not acted on) or C(updating) (a rolling update is already under way, so
        the service is left alone).
      type: str
      sample: healed
    seconds:
      description: Seconds spent waiting for the redeployed service to converge.
      type: float
      sample: 12.3
    error:
      description: Why the service is still failing.
      type: str
      returned: when result is failed
      sample: "service boxoffice_cron did not converge: update status is paused: ..."
healed_services:
  description: Names of the services redeployed and converged.
  returned: always
  type: list
  elements: str
failed_services:
  description: Names of the services still failing after the redeploy.
  returned: always
  type: list
  elements: str
'''

import datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    COMMON_ARGUMENT_SPEC,
    DOCKER_IMPORT_ERROR,
    DOCKER_REQUIREMENT,
    HAS_DOCKER,
    DockerException,
    SwarmError,
    count_running,
    get_client,
    list_services,
    parse_timestamp,
    ready_node_ids,
    service_mode,
    service_tasks,
    update_service_spec,
    wait_converged,
)

STACK_LABEL = 'com.docker.stack.namespace'
FAILED_STATES = ('failed', 'rejected')
# Task states on the way to running. A task in one of them is Swarm still at work, unless it
# has been stuck there longer than the recent window (no node fits, image missing, ...).
STARTING_STATES = ('new', 'allocated', 'pending', 'assigned', 'accepted', 'preparing', 'ready', 'starting')


def select_services(services, stack, labels):
    selected = []
    for service in services:
        spec_labels = service['Spec'].get('Labels') or {}
        if stack and not (spec_labels.get(STACK_LABEL) == stack
                          or service['Spec']['Name'].startswith(stack + '_')):
            continue
        if labels and any(spec_labels.get(key) != str(value) for key, value in labels.items()):
            continue
        selected.append(service)
    return sorted(selected, key=lambda svc: svc['Spec']['Name'])


def completed_slots(tasks):
    """Slots whose newest task ran to completion (a finished one-shot replica, not a failure)."""
    newest = {}
    for task in tasks:
        slot = task.get('Slot') or task.get('NodeID')
        if slot not in newest or parse_timestamp(task['CreatedAt']) > parse_timestamp(newest[slot]['CreatedAt']):
            newest[slot] = task
    return sum(1 for task in newest.values() if task['Status'].get('State') == 'complete')


def inspect_health(service, tasks, ready, recent, restart_threshold, now):
    """Return (desired, running, findings) for one service."""
    spec = service['Spec']
    mode, replicas = service_mode(spec)
    running = count_running(tasks, ready)
    if mode == 'global':
        desired = sum(1 for task in tasks
                      if task.get('DesiredState') == 'running' and task.get('NodeID') in ready)
    else:
        desired = replicas
    condition = ((spec['TaskTemplate'].get('RestartPolicy') or {}).get('Condition')) or 'any'
    satisfied = running + (completed_slots(tasks) if condition != 'any' else 0)
    since = now - datetime.timedelta(seconds=recent)
    starting = [task for task in tasks
                if task.get('DesiredState') == 'running'
                and (task.get('Status') or {}).get('State') in STARTING_STATES]
    stuck = [task for task in starting
             if (parse_timestamp(task['Status'].get('Timestamp')) or now) < since]

    findings = []
    # Replicas still starting (within the window) are not missing: a heal run right after a
    # deploy must not restart a slow-starting service (e.g. one waiting for its healthcheck).
    if satisfied + len(starting) - len(stuck) < desired:
        findings.append(dict(kind='under_replicated',
                             detail='%d of %d replicas running, %d starting, %d stuck starting'
                             % (running, desired, len(starting) - len(stuck), len(stuck))))
    if stuck:
        findings.append(dict(kind='stuck_starting', count=len(stuck), detail='; '.join(sorted(
            'task %s %s since %s: %s' % (task['ID'][:12], task['Status']['State'], task['Status'].get('Timestamp'),
                                         task['Status'].get('Err') or task['Status'].get('Message') or 'no message')
            for task in stuck))))

    # Failures from before the last spec change belong to the previous deployment.
    updated_at = parse_timestamp(service.get('UpdatedAt'))
    if updated_at and updated_at > since:
        since = updated_at
    failures = []
    for task in tasks:
        status = task.get('Status') or {}
        when = parse_timestamp(status.get('Timestamp'))
        if status.get('State') in FAILED_STATES and when and when >= since:
            failures.append('task %s %s %s: %s' % (
                task['ID'][:12], status['State'], status['Timestamp'],
                status.get('Err') or status.get('Message') or 'no error message'))
    if failures:
        findings.append(dict(kind='failed_tasks', count=len(failures), detail='; '.join(sorted(failures))))
    if len(failures) > restart_threshold:
        findings.append(dict(kind='restart_loop', count=len(failures),
                             detail='%d task failures since %s (threshold %d)'
                             % (len(failures), since.strftime('%Y-%m-%dT%H:%M:%SZ'), restart_threshold)))

    update_state = (service.get('UpdateStatus') or {}).get('State')
    if update_state in ('paused', 'rollback_paused'):
        findings.append(dict(kind='update_paused', detail=service['UpdateStatus'].get('Message', '')))
    return desired, running, findings


def redeploy(client, service):
    """Rolling force update: bump ForceUpdate so Swarm replaces every task with the same spec."""
    spec = service['Spec']
    spec['TaskTemplate']['ForceUpdate'] = int(spec['TaskTemplate'].get('ForceUpdate') or 0) + 1
    update_service_spec(client, service, spec)


def heal(module, client):
    params = module.params
    now = datetime.datetime.now(datetime.timezone.utc)
    ready = ready_node_ids(client)
    results = []
    for service in select_services(list_services(client), params['stack'], params['labels']):
        mode = service_mode(service['Spec'])[0]
        if mode not in ('replicated', 'global'):
            continue
        desired, running, findings = inspect_health(
            service, service_tasks(client, service['ID']), ready,
            params['recent'], params['restart_threshold'], now)
        result = dict(name=service['Spec']['Name'], desired=desired, running_tasks=running,
                      findings=findings, action='none', result='healthy', seconds=0.0)
        results.append(result)
        if not findings:
            continue
        # Swarm is already replacing tasks; a forced update now would cut that rollout short.
        if (service.get('UpdateStatus') or {}).get('State') in ('updating', 'rollback_started'):
            result['result'] = 'updating'
            continue
        if module.check_mode:
            result.update(action='would_redeploy', result='unhealthy')
            continue
        result.update(action='redeploy', result='redeployed')
        update_status_before = service.get('UpdateStatus')
        try:
            redeploy(client, service)
            if params['wait']:
                result['running_tasks'], result['seconds'] = wait_converged(
                    client, service['ID'], desired, params['timeout'],
                    update_status_before=update_status_before, require_update_completed=True)
                result['result'] = 'healed'
        except (SwarmError, DockerException) as exc:
            result.update(result='failed', error=str(exc))
    return results


def main():
    argument_spec = dict(
        stack=dict(type='str'),
        labels=dict(type='dict'),
        recent=dict(type='int', default=300),
        restart_threshold=dict(type='int', default=3),
    )
    argument_spec.update(COMMON_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib(DOCKER_REQUIREMENT), exception=DOCKER_IMPORT_ERROR)
    for option in ('recent', 'restart_threshold', 'timeout'):
        if module.params[option] < 0:
            module.fail_json(msg='%s must be 0 or more, got %d.' % (option, module.params[option]))

    try:
        results = heal(module, get_client(module.params['docker_host']))
    except (SwarmError, DockerException) as exc:
        module.fail_json(msg=str(exc))

    failed = [r['name'] for r in results if r['result'] == 'failed']
    outcome = dict(
        changed=any(r['action'] != 'none' for r in results),
        services=results,
        healed_services=[r['name'] for r in results if r['result'] == 'healed'],
        failed_services=failed,
    )
    if failed:
        module.fail_json(msg='Still failing after a redeploy: %s. See services[].error and '
                             '`docker service ps --no-trunc <service>`.' % ', '.join(failed), **outcome)
    module.exit_json(**outcome)


if __name__ == '__main__':
    main()
