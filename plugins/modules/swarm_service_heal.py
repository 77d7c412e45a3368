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
    fewer running replicas than desired, more running tasks than desired, tasks stuck on their
    way to running for longer than O(recent) seconds, tasks that failed or were rejected in the
    last O(recent) seconds, restart loops (more than O(restart_threshold) such failures) and
    paused updates.
  - Replicas that are still starting (for less than O(recent) seconds) are not counted as
    missing, so a heal right after a deploy leaves slow-starting services alone.
  - Tasks told to stop whose container is still running more than O(recent) seconds later
    count as running, as in C(docker service ls); more running tasks than desired are reported
    as C(over_replicated).
  - Each unhealthy service is redeployed with a rolling force update (its
    C(TaskTemplate.ForceUpdate) counter is incremented; the rest of the spec is kept as is),
    then the module waits until it has converged under the same rule as
    M(boxoffice.pretix.swarm_service_scale) and its rolling update has completed. A task of the
    redeploy that fails makes the service fail at once. After a restart loop the new tasks must
    also stay up twice as long as the loop took between failures; after an over-replication no
    more tasks than desired may run, those told to stop included.
  - A service is reported with result C(failed), and the module fails after all other services
    have been handled, when it is still failing after its redeploy; when its rolling update or
    rollback is under way and its tasks fail (failures since the update started, or a restart
    loop), which is not redeployed because that would cut the rollout short; or when its only
    finding is tasks told to stop that still run, which no redeploy stops.
  - Failures of tasks from before the service's last rolling update started
    (C(UpdateStatus.StartedAt)) are not counted as C(failed_tasks), so a service healed a moment
    ago is not redeployed again for the failures that caused the heal. They still count towards
    a restart loop until, in every slot that was looping, a task has run twice as long as the
    loop took between failures (at most O(recent) seconds), so a crash-looping service is
    reported on every run, also right after a redeploy or a rollback.
  - A rolling update in progress with no failing tasks is left alone (result C(updating)).
  - Job-mode services (one-shot tasks) are never redeployed. For replicated services whose
    restart condition is not C(any), a slot whose newest task completed counts as satisfied.
  - Where the repair of a kind of service is known, O(hints) names it in RV(services[].hint)
    and in the failure message.
  - Must run on a Swarm manager (or point O(docker_host) at one).
author:
  - boxoffice.pretix engineers (!UNKNOWN)
extends_documentation_fragment:
  - boxoffice.pretix.swarm
  - boxoffice.pretix.swarm.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports findings and which services would be redeployed; redeploys nothing.
      - Services that are failing without a redeploy (see above) fail the module in check mode too.
  diff_mode:
    support: none
    details:
      - Findings and actions are returned in RV(services) instead.
  idempotent:
    support: partial
    details:
      - A second run finds the services healed by the first one healthy and reports no change,
        unless they broke again in between.
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
      - Window in seconds in which failed or rejected tasks count as findings, and how long a
        task may stay on its way to running or, told to stop, keep running before it counts as
        stuck. Keep it longer than the services' stop grace periods.
    type: int
    default: 300
  restart_threshold:
    description:
      - A service with more than this many failed or rejected tasks inside O(recent) is
        reported as a restart loop, unless every slot that failed has since run a task long
        enough (see above).
    type: int
    default: 3
  hints:
    description:
      - What to do about a service that stays unhealthy, by the value of its O(hint_label)
        service label, for example C(postgres) for the PostgreSQL members.
      - C(<name>) in a text is replaced by the service's name.
    type: dict
    default: {}
  hint_label:
    description:
      - The service label whose value selects the text in O(hints) and O(stateful).
    type: str
    default: boxoffice.component
  stateful:
    description:
      - Values of O(hint_label) of services whose tasks keep state that they recover on their own
        (database members).
      - Such a service is never redeployed while all its desired tasks run, because restarting a
        running member gains nothing and, for a primary, costs a failover.
      - A restart loop of one is reported as C(failed), with the hint, and not redeployed, because
        the same spec on the same data fails the same way.
    type: list
    elements: str
    default: []
  wait:
    description:
      - Wait for every redeployed service to converge. Without it the result of a redeployed
        service is C(redeployed) and nothing is verified.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for each redeployed service to converge before it is reported failed.
      - O(timeout) is another thing, the limit of each Docker API call.
    type: int
    default: 300
notes:
  - Swarm keeps only a few old tasks per slot (C(TaskHistoryRetentionLimit), default 5), which
    caps how many failures a restart loop can show.
  - Times are compared on the clock of the Docker engine the module talks to.
seealso:
  - module: boxoffice.pretix.swarm_service_scale
'''

EXAMPLES = r'''
- name: Heal the boxoffice stack
  boxoffice.pretix.swarm_service_heal:
    stack: boxoffice

- name: Heal, and say what to do about PostgreSQL members that stay broken
  boxoffice.pretix.swarm_service_heal:
    hints:
      postgres: "see `docker service logs <name>`, then reclone <name> with playbooks/data.yml"

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
      description: >-
        Running tasks Swarm still wants on ready nodes, after the redeploy when one was made
        and waited for.
      type: int
      sample: 3
    findings:
      description: >-
        What was wrong; empty for a healthy service. C(kind) is one of C(under_replicated),
        C(stuck_starting), C(over_replicated), C(failed_tasks), C(restart_loop) or
        C(update_paused). C(over_replicated) also says how many of the extra tasks were told
        to stop (C(told_to_stop)); C(restart_loop) how long new tasks must stay up before the
        loop counts as over (C(settle_seconds)).
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
        (check mode, not acted on) or C(updating) (a rolling update without failing tasks is
        under way, so the service is left alone).
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
    hint:
      description: >-
        The O(hints) text for this service (C(<name>) replaced), when the service is not
        healthy and its O(hint_label) label has a text.
      type: str
      returned: when a hint applies
      sample: "its log (docker service logs pg-0) says why"
healed_services:
  description: Names of the services redeployed and converged.
  returned: always
  type: list
  elements: str
failed_services:
  description: Names of the services still failing.
  returned: always
  type: list
  elements: str
'''

import datetime

from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    FAILED_STATES,
    DockerException,
    SwarmError,
    count_running,
    desired_tasks,
    engine_now,
    get_client,
    list_services,
    parse_timestamp,
    ready_node_ids,
    service_mode,
    service_tasks,
    swarm_module,
    task_error,
    update_service_spec,
    wait_converged,
)

STACK_LABEL = 'com.docker.stack.namespace'
# Task states on the way to running. A task in one of them is Swarm still at work, unless it
# has been stuck there longer than the recent window (no node fits, image missing, ...).
STARTING_STATES = ('new', 'allocated', 'pending', 'assigned', 'accepted', 'preparing', 'ready', 'starting')
# UpdateStatus states in which Swarm is replacing tasks itself.
ROLLING_STATES = ('updating', 'rollback_started')
# Findings that mean the service's tasks are failing, not just that Swarm is at work.
FAILING_KINDS = ('failed_tasks', 'restart_loop')
# A restart loop is over in a slot once a task has run this many times the loop's time between
# failures: long enough that it would have failed already if it were looping the same way.
LOOP_SETTLE_FACTOR = 2


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


def slot_key(task):
    """Replicated tasks share a slot number; a global service has one slot per node."""
    return task.get('Slot') or task.get('NodeID')


def completed_slots(tasks):
    """Slots whose newest task ran to completion (a finished one-shot replica, not a failure)."""
    newest = {}
    for task in tasks:
        slot = slot_key(task)
        if slot not in newest or parse_timestamp(task['CreatedAt']) > parse_timestamp(newest[slot]['CreatedAt']):
            newest[slot] = task
    return sum(1 for task in newest.values() if task['Status'].get('State') == 'complete')


def update_started(service):
    """When the service's current deployment began: its last rolling update, else its creation.

    A rollback keeps the StartedAt of the update it undoes, so its tasks count as that deployment's.
    """
    return (parse_timestamp((service.get('UpdateStatus') or {}).get('StartedAt'))
            or parse_timestamp(service.get('CreatedAt')))


def describe(task):
    status = task.get('Status') or {}
    return 'task %s %s %s: %s' % (task['ID'][:12], status.get('State'), status.get('Timestamp'), task_error(task))


def restart_loop_slots(tasks, failures, now, recent):
    """Return (slots still looping, seconds a new task must stay up) for the failed tasks.

    In each slot with failures, the loop's period is its time between failures (0 for a single
    failure). The slot is over the loop once a task started after its last failure has been
    running LOOP_SETTLE_FACTOR periods, at most the recent window; a slot the orchestrator
    retired (scaled down, no failing task last) is over too.
    """
    times = {}
    for task in failures:
        times.setdefault(slot_key(task), []).append(parse_timestamp(task['Status']['Timestamp']))
    looping = []
    settle = 0.0
    for slot, stamps in sorted(times.items(), key=lambda item: str(item[0])):
        stamps.sort()
        period = (stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1) if len(stamps) > 1 else 0.0
        needed = min(LOOP_SETTLE_FACTOR * period, float(recent))
        settle = max(settle, needed)
        slot_tasks = [task for task in tasks if slot_key(task) == slot]
        newest = max(slot_tasks, key=lambda task: parse_timestamp(task['CreatedAt']))
        if (all(task.get('DesiredState') in ('shutdown', 'remove') for task in slot_tasks)
                and newest['Status'].get('State') not in FAILED_STATES):
            continue
        up = [(now - parse_timestamp(task['Status']['Timestamp'])).total_seconds() for task in slot_tasks
              if task.get('DesiredState') == 'running' and task['Status'].get('State') == 'running'
              and parse_timestamp(task['Status'].get('Timestamp'))
              and parse_timestamp(task['Status']['Timestamp']) > stamps[-1]]
        if not up or max(up) < needed:
            looping.append(dict(slot=slot, failures=len(stamps), period=period, needed=needed,
                                up=max(up) if up else None))
    return looping, settle


def over_replication(mode, replicas, tasks, ready, since):
    """Return (how many more tasks run than Swarm wants, slots running more than one task Swarm
    wants, tasks told to stop before `since` that still run)."""
    wanted = [task for task in tasks
              if task.get('DesiredState') == 'running' and task['Status'].get('State') == 'running'
              and task.get('NodeID') in ready]
    per_slot = {}
    for task in wanted:
        per_slot.setdefault(slot_key(task), []).append(task)
    crowded = dict((slot, slot_tasks) for slot, slot_tasks in per_slot.items() if len(slot_tasks) > 1)
    if mode == 'global':
        extra = sum(len(slot_tasks) - 1 for slot_tasks in crowded.values())
    else:
        extra = max(0, len(wanted) - replicas, sum(len(slot_tasks) - 1 for slot_tasks in crowded.values()))
    stopping = [task for task in tasks
                if task.get('DesiredState') != 'running' and task['Status'].get('State') == 'running'
                and task.get('NodeID') in ready
                and (parse_timestamp(task.get('UpdatedAt')) or since) < since]
    return extra, crowded, stopping


def inspect_health(service, tasks, ready, recent, restart_threshold, now):
    """Return (desired, running, findings) for one service."""
    spec = service['Spec']
    mode, replicas = service_mode(spec)
    running = count_running(tasks, ready)
    desired = desired_tasks(service, tasks, ready)
    condition = ((spec['TaskTemplate'].get('RestartPolicy') or {}).get('Condition')) or 'any'
    satisfied = running + (completed_slots(tasks) if condition != 'any' else 0)
    window = now - datetime.timedelta(seconds=recent)
    starting = [task for task in tasks
                if task.get('DesiredState') == 'running'
                and (task.get('Status') or {}).get('State') in STARTING_STATES]
    stuck = [task for task in starting
             if (parse_timestamp(task['Status'].get('Timestamp')) or now) < window]

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
                                         task_error(task))
            for task in stuck))))

    # Tasks told to stop keep running through their stop grace period; one still running after
    # the recent window is stuck, and counts as running as in `docker service ls`.
    extra, crowded, stopping = over_replication(mode, replicas, tasks, ready, window)
    if extra or stopping:
        details = ['%d running for %d desired' % (running + len(stopping), desired)]
        details.extend('%s %s: %d tasks running' % ('node' if mode == 'global' else 'slot', slot, len(slot_tasks))
                       for slot, slot_tasks in sorted(crowded.items(), key=lambda item: str(item[0])))
        details.extend('task %s on node %s told to stop at %s, still running'
                       % (task['ID'][:12], task.get('NodeID'), task.get('UpdatedAt')) for task in stopping)
        findings.append(dict(kind='over_replicated', count=extra + len(stopping), told_to_stop=len(stopping),
                             detail='; '.join(details)))

    failures = [task for task in tasks
                if (task.get('Status') or {}).get('State') in FAILED_STATES
                and parse_timestamp(task['Status'].get('Timestamp'))
                and parse_timestamp(task['Status']['Timestamp']) >= window]
    # Failures from before the current deployment began are not this deployment's failures.
    started = update_started(service)
    current = [task for task in failures
               if not started or parse_timestamp(task['Status']['Timestamp']) >= started]
    if current:
        findings.append(dict(kind='failed_tasks', count=len(current),
                             detail='; '.join(sorted(describe(task) for task in current))))
    # A restart loop outlives the deployment it started in: only tasks that stay up end it.
    if len(failures) > restart_threshold:
        looping, settle = restart_loop_slots(tasks, failures, now, recent)
        if looping:
            findings.append(dict(
                kind='restart_loop', count=len(failures), settle_seconds=round(settle, 1),
                detail='%d task failures in the last %ds (threshold %d); %s' % (
                    len(failures), recent, restart_threshold, '; '.join(
                        '%s %s: %d failures, %.1fs apart, %s' % (
                            'node' if mode == 'global' else 'slot', loop['slot'], loop['failures'], loop['period'],
                            'no task running since' if loop['up'] is None
                            else 'a task up %.1fs of the %.1fs that end the loop' % (loop['up'], loop['needed']))
                        for loop in looping))))

    update_state = (service.get('UpdateStatus') or {}).get('State')
    if update_state in ('paused', 'rollback_paused'):
        findings.append(dict(kind='update_paused', detail=service['UpdateStatus'].get('Message', '')))
    return desired, running, findings


def plan(findings, update_state, recent):
    """Return (verdict, error) for a service: healthy, updating, failed (nothing to do) or redeploy."""
    if not findings:
        return 'healthy', None
    kinds = [finding['kind'] for finding in findings]
    if update_state in ROLLING_STATES:
        # A rollout replaces tasks by itself, so missing or extra tasks are expected; failing
        # tasks are not, and a forced update now would cut the rollout short.
        if any(kind in FAILING_KINDS for kind in kinds):
            return 'failed', ('its tasks keep failing while its %s is under way (%s); it is not redeployed '
                              'in the middle of it' % ('rollback' if update_state == 'rollback_started'
                                                       else 'rolling update',
                                                       ', '.join(k for k in kinds if k in FAILING_KINDS)))
        return 'updating', None
    if kinds == ['over_replicated'] and findings[0]['told_to_stop'] == findings[0]['count']:
        # A redeploy replaces the tasks Swarm wants; it cannot stop a container already told to.
        return 'failed', ('%d tasks told to stop more than %ds ago are still running (%s); a redeploy does '
                          'not stop them: the Docker engine on their node must (docker kill there, or '
                          'restart that engine)' % (findings[0]['count'], recent, findings[0]['detail']))
    return 'redeploy', None


def is_stateful(service, params):
    return (service['Spec'].get('Labels') or {}).get(params['hint_label']) in params['stateful']


def stateful_verdict(findings, all_running):
    """(verdict, error) for a stateful service: a restart loop fails the run with no redeploy
    (the same spec on the same data fails the same way), a member that runs is left running,
    and only a missing task that is not looping is redeployed."""
    loops = [finding for finding in findings if finding['kind'] == 'restart_loop']
    if loops:
        return 'failed', ('it keeps restarting (%s); it is not redeployed: the same data would fail '
                          'the same way' % loops[0]['detail'])
    if all_running:
        return 'healthy', None
    return 'redeploy', None


def hint_for(service, hints, hint_label):
    value = (service['Spec'].get('Labels') or {}).get(hint_label)
    if value is None or value not in hints:
        return None
    return str(hints[value]).replace('<name>', service['Spec']['Name'])


def redeploy(client, service):
    """Rolling force update: bump ForceUpdate so Swarm replaces every task with the same spec."""
    spec = service['Spec']
    spec['TaskTemplate']['ForceUpdate'] = int(spec['TaskTemplate'].get('ForceUpdate') or 0) + 1
    update_service_spec(client, service, spec)


def heal(module, client):
    params = module.params
    now = engine_now(client)
    ready = ready_node_ids(client)
    results = []
    for service in select_services(list_services(client), params['stack'], params['labels']):
        mode = service_mode(service['Spec'])[0]
        if mode not in ('replicated', 'global'):
            continue
        tasks = service_tasks(client, service['ID'])
        desired, running, findings = inspect_health(
            service, tasks, ready, params['recent'], params['restart_threshold'], now)
        result = dict(name=service['Spec']['Name'], desired=desired, running_tasks=running,
                      findings=findings, action='none', result='healthy', seconds=0.0)
        results.append(result)
        update_status_before = service.get('UpdateStatus')
        verdict, error = plan(findings, (update_status_before or {}).get('State'), params['recent'])
        if verdict == 'healthy':
            continue
        if verdict == 'redeploy' and is_stateful(service, params):
            verdict, error = stateful_verdict(findings, running >= desired)
            if verdict == 'healthy':
                continue
        hint = hint_for(service, params['hints'], params['hint_label'])
        if hint:
            result['hint'] = hint
        if verdict in ('updating', 'failed'):
            result['result'] = verdict
            if error:
                result['error'] = error
            continue
        if module.check_mode:
            result.update(action='would_redeploy', result='unhealthy')
            continue
        result.update(action='redeploy', result='redeployed')
        kinds = dict((finding['kind'], finding) for finding in findings)
        try:
            redeploy(client, service)
            if params['wait']:
                result['running_tasks'], result['seconds'] = wait_converged(
                    client, service['ID'], desired, params['wait_timeout'],
                    update_status_before=update_status_before, require_update_completed=True,
                    hold_seconds=kinds.get('restart_loop', {}).get('settle_seconds', 0),
                    known_task_ids=set(task['ID'] for task in tasks),
                    exact='over_replicated' in kinds, follow_rescale=True)
                result['result'] = 'healed'
        except (SwarmError, DockerException) as exc:
            result.update(result='failed', error=str(exc))
    return results


def failure_message(results):
    failed = [r for r in results if r['result'] == 'failed']
    parts = []
    redeployed = [r['name'] for r in failed if r['action'] == 'redeploy']
    if redeployed:
        parts.append('Still failing after a redeploy: %s.' % ', '.join(redeployed))
    left = ['%s (%s)' % (r['name'], r['error']) for r in failed if r['action'] != 'redeploy']
    if left:
        parts.append('Failing, not redeployed: %s.' % '; '.join(left))
    parts.extend('What to do about %s: %s.' % (r['name'], r['hint'].rstrip('.')) for r in failed if r.get('hint'))
    parts.append('See services[].error and `docker service ps --no-trunc <service>`.')
    return ' '.join(parts)


def main():
    argument_spec = dict(
        stack=dict(type='str'),
        labels=dict(type='dict'),
        recent=dict(type='int', default=300),
        restart_threshold=dict(type='int', default=3),
        hints=dict(type='dict', default={}),
        hint_label=dict(type='str', default='boxoffice.component'),
        stateful=dict(type='list', elements='str', default=[]),
    )
    module = swarm_module(argument_spec)
    for option in ('recent', 'restart_threshold', 'wait_timeout'):
        if module.params[option] < 0:
            module.fail_json(msg='%s must be 0 or more, got %d.' % (option, module.params[option]))
    not_text = sorted(str(key) for key, value in module.params['hints'].items() if not isinstance(value, str))
    if not_text:
        module.fail_json(msg='hints must map label values to texts; not a text for: %s.' % ', '.join(not_text))

    try:
        results = heal(module, get_client(module.params))
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
        module.fail_json(msg=failure_message(results), **outcome)
    module.exit_json(**outcome)


if __name__ == '__main__':
    main()
