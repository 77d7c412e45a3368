#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: swarm_service_scale
short_description: Scale Docker Swarm services and wait until the replicas really run
version_added: 0.1.0
description:
  - Sets the replica count of one or more replicated Swarm services and waits until that many
    tasks are running, following the Docker CLI's convergence rule.
  - A replica counts only when its task is in state C(running), its desired state is
    C(running) and its node is C(ready). The count must then hold for the service's
    C(UpdateConfig.Monitor) window (Docker's default 5 seconds).
  - Fails when the service update is paused or a rollback is in progress, or when a rollback
    completes after this module changed the service. A rollback in progress is waited for
    (within O(wait_timeout)) and reported once it has completed or paused, so the service is no
    longer moving when the module returns; at the timeout the message says it is still under way.
  - Every requested service is checked before any is changed. Unknown services, global or job
    mode services and counts outside O(min_replicas)/O(max_replicas) fail the module with
    nothing changed.
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
      - Reports which services would change; changes and waits for nothing.
  diff_mode:
    support: full
    details:
      - Before and after replica counts per service.
  idempotent:
    support: full
options:
  name:
    description:
      - Service name, or list of names. With O(stack), the names inside that stack
        (C(web) means C(<stack>_web)).
    type: list
    elements: str
    required: true
    aliases: [names, service]
  stack:
    description:
      - Stack namespace. Service names are looked up as C(<stack>_<name>), the names
        C(docker stack deploy) gives.
    type: str
  replicas:
    description:
      - Wanted number of replicas for every service in O(name).
    type: int
    required: true
  min_replicas:
    description:
      - Smallest count accepted for O(replicas); a guard for playbooks fed by surveys.
    type: int
    default: 0
  max_replicas:
    description:
      - Largest count accepted for O(replicas). No upper bound when unset.
    type: int
  autoscale_hold:
    description:
      - Record the new count in the service's label C(boxoffice.autoscale.recommendations), the
        history that M(boxoffice.pretix.swarm_service_autoscale) and the in-swarm autoscaler
        share, as a recommendation made now.
      - An autoscaler then keeps the count for its scale-down stabilisation window (and scales
        up at once if its metric asks for more), instead of undoing it at its next run. Use it
        for a service that an autoscaler rule scales; a count outside the rule's min and max is
        still brought back within them.
      - Nothing is recorded when the count does not change.
    type: bool
    default: false
  wait:
    description:
      - Wait until every service has converged. Also applies when nothing had to change,
        so the module confirms the replicas are really running.
    type: bool
    default: true
  rollout:
    description:
      - The services were just updated, for example by M(community.docker.docker_swarm_service),
        which does not wait. Also wait until Swarm's rolling update has completed, and fail when
        Swarm paused it or rolled it back, naming the errors of the tasks that failed.
      - Without it, a rollback that happened before the module ran goes unnoticed, because the
        old tasks run and are counted.
      - Use it only right after a change, because a rollback left over from an earlier run
        fails it too.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait for each service to converge before failing.
      - O(timeout) is another thing, the limit of each Docker API call.
    type: int
    default: 300
notes:
  - Scaling to 0 is allowed (the convergence target is then 0 running tasks).
  - When another writer changes the count while the module waits (an autoscaler, another run),
    the module fails at once with that count in the message, instead of waiting for a count that
    can no longer come.
  - A write that loses a race with another writer (Docker's C(update out of sequence)) is retried
    on the service as it then is.
seealso:
  - module: boxoffice.pretix.swarm_service_heal
  - module: community.docker.docker_swarm_service
'''

EXAMPLES = r'''
- name: Scale the pretix web tier to 10 replicas and wait until they run
  boxoffice.pretix.swarm_service_scale:
    stack: boxoffice
    name: pretix-web
    replicas: 10
    max_replicas: 30

- name: Deploy a service, then wait until its rolling update completed, or fail on a rollback
  community.docker.docker_swarm_service:
    name: pgpool
    image: registry.example.org/pgpool:4.3.5
    replicas: 2
  register: pgpool_deploy

- name: Wait for the rollout
  boxoffice.pretix.swarm_service_scale:
    name: pgpool
    replicas: 2
    rollout: "{{ pgpool_deploy is changed }}"

- name: Scale pretix web, which the in-swarm autoscaler also scales, and let the autoscaler keep it
  boxoffice.pretix.swarm_service_scale:
    name: pretix-web
    replicas: 6
    autoscale_hold: true

- name: Scale two services at once by full name, without waiting
  boxoffice.pretix.swarm_service_scale:
    names:
      - boxoffice_nginx
      - boxoffice_pretix-web
    replicas: 3
    wait: false
'''

RETURN = r'''
services:
  description: One entry per requested service, in request order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Full service name.
      type: str
      sample: boxoffice_pretix-web
    previous_replicas:
      description: Replica count before the module ran.
      type: int
      sample: 2
    replicas:
      description: Replica count after the module ran (the requested count).
      type: int
      sample: 10
    running_tasks:
      description: Running tasks on ready nodes at the end (before any change in check mode).
      type: int
      sample: 10
    seconds:
      description: Seconds spent waiting for convergence, monitor window included (0 without O(wait)).
      type: float
      sample: 14.5
    changed:
      description: Whether this service's replica count was (or in check mode would be) changed.
      type: bool
      sample: true
'''

from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale import held_labels
from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    APIError,
    DockerException,
    SwarmError,
    count_running,
    engine_now,
    get_client,
    ready_node_ids,
    replicated_services,
    service_mode,
    service_tasks,
    swarm_module,
    update_service_spec,
    wait_service,
)


def validate_request(params):
    """Reject bad counts before talking to Docker at all."""
    replicas, low, high = params['replicas'], params['min_replicas'], params['max_replicas']
    if replicas < 0:
        raise SwarmError('replicas must be 0 or more, got %d.' % replicas)
    if low < 0 or (high is not None and high < low):
        raise SwarmError('min_replicas (%d) must be >= 0 and <= max_replicas (%s).' % (low, high))
    if replicas < low or (high is not None and replicas > high):
        raise SwarmError('replicas=%d is outside the allowed range %d..%s (min_replicas/max_replicas).'
                         % (replicas, low, 'unbounded' if high is None else high))
    if not params['name']:
        raise SwarmError('name must list at least one service.')


def set_replicas(client, service, replicas, autoscale_hold, attempts=3):
    """Write the count (and with autoscale_hold the history label) to service.

    Swarm refuses a write based on a spec another writer has since changed; the write is then
    made again on the service as it is now, so a concurrent label or count change is not lost.
    """
    for attempt in range(attempts):
        spec = service['Spec']
        spec['Mode']['Replicated']['Replicas'] = replicas
        if autoscale_hold:
            spec['Labels'] = held_labels(spec.get('Labels') or {}, engine_now(client).timestamp(),
                                         replicas)
        try:
            update_service_spec(client, service, spec)
            return
        except APIError as exc:
            if 'out of sequence' not in str(exc) or attempt == attempts - 1:
                raise
        service.update(client.api.inspect_service(service['ID']))


def scale(module, client, services, results):
    """Append one result per service to results as it goes, so a failure still reports them."""
    target = module.params['replicas']
    ready = ready_node_ids(client)
    for service in services:
        spec = service['Spec']
        previous = service_mode(spec)[1]
        changed = previous != target
        running = count_running(service_tasks(client, service['ID']), ready)
        if changed and not module.check_mode:
            set_replicas(client, service, target, module.params['autoscale_hold'])
        results.append(dict(name=spec['Name'], previous_replicas=previous, replicas=target,
                            running_tasks=running, seconds=0.0, changed=changed))
    # Waiting after all updates lets the services converge in parallel instead of one by one.
    if module.params['wait'] and not module.check_mode:
        for service, result in zip(services, results):
            result['running_tasks'], result['seconds'] = wait_service(
                client, service, target, module.params['wait_timeout'], rollout=module.params['rollout'])


def main():
    argument_spec = dict(
        name=dict(type='list', elements='str', required=True, aliases=['names', 'service']),
        stack=dict(type='str'),
        replicas=dict(type='int', required=True),
        min_replicas=dict(type='int', default=0),
        max_replicas=dict(type='int'),
        rollout=dict(type='bool', default=False),
        autoscale_hold=dict(type='bool', default=False),
    )
    module = swarm_module(argument_spec)

    results = []
    try:
        validate_request(module.params)
        client = get_client(module.params)
        services = replicated_services(client, module.params['name'], module.params['stack'], 'scaled')
        scale(module, client, services, results)
    except (SwarmError, DockerException) as exc:
        module.fail_json(msg=str(exc), services=results, changed=any(r['changed'] for r in results))

    outcome = dict(changed=any(r['changed'] for r in results), services=results)
    if module._diff:
        outcome['diff'] = dict(before=dict((r['name'], r['previous_replicas']) for r in results),
                               after=dict((r['name'], r['replicas']) for r in results))
    module.exit_json(**outcome)


if __name__ == '__main__':
    main()
