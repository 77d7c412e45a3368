#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: swarm_service_autoscale
short_description: Scale a Docker Swarm service on a Prometheus metric, with Kubernetes HPA rules
version_added: 0.1.0
description:
  - Reads one value with a PromQL query and sets the replica count of one replicated Swarm
    service by the rules of Kubernetes' Horizontal Pod Autoscaler, then waits until the
    replicas run as M(boxoffice.pretix.swarm_service_scale) does.
  - The recommendation is C(ceil(current replicas * metric / target)), or the current count when
    C(metric / target) is within O(tolerance) of 1. The query must therefore return a value per
    replica (an average, or a total divided by the replica count), so that the recommendation is
    the count that would bring it to O(target).
  - "Scale-down stabilisation: the count never goes below the highest recommendation made within
    the last O(scale_down_stabilization) seconds, so a brief dip does not scale down; a low value
    that lasts the whole window does. Scale-up is not held back by the window."
  - "Scale-up rate limit: one run adds at most the larger of O(scale_up_max_step) replicas and
    O(scale_up_max_percent) percent of the current count. O(min_replicas) and O(max_replicas)
    then bound the count, and win over the rate limit (a service below O(min_replicas) goes
    straight to it)."
  - The recommendations of the window are kept on the service itself, in the label
    C(boxoffice.autoscale.recommendations) (compact JSON C([[unix_seconds, replicas], ...]),
    stamped with the Docker engine's clock and pruned to the window), so they survive between
    runs that share nothing else, such as AWX jobs in fresh containers.
  - Scales nothing when the query returns no sample, NaN or an infinity (RV(reason) says so), and
    then records nothing either; nor when the service runs 0 replicas, which means it was stopped
    on purpose; nor while Swarm is still rolling out, or has paused, an update of the service,
    because any spec written then would become the one a rollback returns to.
  - Fails with nothing changed when Prometheus cannot be reached or refuses the query, when the
    query returns more than one sample, and on settings the rules cannot work with.
  - Every decision is written to the managed host's log (syslog or journal) with its inputs.
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
      - Reads the metric and reports the decision; changes neither the replica count nor the
        history label, and waits for nothing.
  diff_mode:
    support: full
    details:
      - Replica count before and after.
  idempotent:
    support: partial
    details:
      - The decision depends on the metric and on the time (the stabilisation window), so a second
        run may scale again when either has moved.
      - Outside check mode every run that decides records its recommendation in the history label,
        unless it is at or below O(min_replicas) (the window's highest can never take the count
        below the minimum, so an idle service writes nothing); that bookkeeping is not reported as
        a change, and C(changed) says whether the replica count changed.
options:
  name:
    description:
      - Service to scale. With O(stack), its name inside that stack (C(web) means C(<stack>_web)).
    type: str
    required: true
    aliases: [service]
  stack:
    description:
      - Stack namespace. The service is looked up as C(<stack>_<name>), the name
        C(docker stack deploy) gives.
    type: str
  prometheus_url:
    description:
      - Base URL of the Prometheus HTTP API, without C(/api/v1), for example
        C(http://prometheus:9090) or C(https://shop.example.org/prometheus).
    type: str
    required: true
  prometheus_username:
    description:
      - User for HTTP basic authentication, for a Prometheus behind an authenticating proxy.
    type: str
  prometheus_password:
    description:
      - Password of O(prometheus_username).
    type: str
  prometheus_validate_certs:
    description:
      - Verify the TLS certificate of an C(https://) O(prometheus_url).
    type: bool
    default: true
  prometheus_ca_path:
    description:
      - CA certificate file to verify an C(https://) O(prometheus_url) against, instead of the
        system's CA bundle.
    type: path
  prometheus_timeout:
    description:
      - Seconds to wait for Prometheus' answer.
    type: int
    default: 30
  query:
    description:
      - PromQL expression that returns the metric per replica, as one sample (an instant vector
        of one series) or a scalar.
      - Sent as it is; render any service name into it before.
    type: str
    required: true
  target:
    description:
      - Value of the metric per replica that the service is scaled to keep; above 0.
    type: float
    required: true
  tolerance:
    description:
      - No scaling while C(metric / target) is within this fraction of 1 (V(0.1) is 10 percent,
        the HPA default).
    type: float
    default: 0.1
  min_replicas:
    description:
      - Fewest replicas; 1 or more.
    type: int
    default: 1
  max_replicas:
    description:
      - Most replicas; not below O(min_replicas).
    type: int
    required: true
  scale_up_max_step:
    description:
      - Replicas one run may add at most (unless O(scale_up_max_percent) allows more). 4 is the HPA
        default, per 15 seconds there, per run here.
    type: int
    default: 4
  scale_up_max_percent:
    description:
      - Percent of the current count one run may add at most, when that is more than
        O(scale_up_max_step). 100 (double) is the HPA default; V(0) leaves only the step.
    type: int
    default: 100
  scale_down_stabilization:
    description:
      - Seconds in which every recommendation counts against a scale-down (the HPA default is
        300). V(0) turns the window off and removes the history label.
      - Pick it longer than the time between runs, or the window holds only the current run.
    type: int
    default: 300
  wait:
    description:
      - After a change of the replica count, wait until the service runs the new count.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the service to converge before failing.
      - O(timeout) is another thing, the limit of each Docker API call.
    type: int
    default: 300
notes:
  - A deployment of the service that sets its labels and replicas (M(community.docker.docker_swarm_service),
    C(docker stack deploy)) drops the history label and resets the count; the window then starts
    afresh from the deployed count.
  - Each run is one update of the service spec, so C(docker service rollback) afterwards only undoes
    the last history write. Redeploy the service instead.
seealso:
  - module: boxoffice.pretix.swarm_service_scale
  - name: Kubernetes Horizontal Pod Autoscaler algorithm
    description: The rules this module follows.
    link: https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details
'''

EXAMPLES = r'''
- name: Keep pretix web at 60 % of one CPU per replica, between 2 and 10 replicas
  boxoffice.pretix.swarm_service_autoscale:
    name: pretix-web
    prometheus_url: http://127.0.0.1:9090
    query: >-
      avg(rate(container_cpu_usage_seconds_total{container_label_com_docker_swarm_service_name="pretix-web"}[1m]))
    target: 0.6
    min_replicas: 2
    max_replicas: 10

- name: Report what the autoscaler would do, without doing it
  boxoffice.pretix.swarm_service_autoscale:
    stack: boxoffice
    name: pretix-worker
    prometheus_url: https://shop.example.org/prometheus
    prometheus_username: autoscaler
    prometheus_password: "{{ vault_prometheus_password }}"
    query: sum(celery_queue_length{queue="default"}) / count(up{service="pretix-worker"} == 1)
    target: 20
    max_replicas: 6
    scale_down_stabilization: 600
  check_mode: true
  register: worker_decision
'''

RETURN = r'''
name:
  description: Full service name.
  returned: always
  type: str
  sample: pretix-web
metric:
  description: The query's value; null when it returned none (then nothing was scaled).
  returned: always
  type: float
  sample: 0.93
ratio:
  description: O(query)'s value divided by O(target); null without a value.
  returned: always
  type: float
  sample: 1.55
current_replicas:
  description: Replica count of the service before the module ran.
  returned: always
  type: int
  sample: 2
recommendation:
  description:
    - The HPA ratio rule's count before the window, the rate limit and the bounds; what the
      history records. Null when no decision was taken.
  returned: always
  type: int
  sample: 4
desired_replicas:
  description: The recommendation after the scale-down stabilisation window.
  returned: always
  type: int
  sample: 4
applied_replicas:
  description:
    - The count the service was set to (in check mode, would be set to), after the scale-up rate
      limit and O(min_replicas)/O(max_replicas). Equal to RV(current_replicas) when nothing changed.
  returned: always
  type: int
  sample: 4
reason:
  description: The decision in one line, with the rule that bound it.
  returned: always
  type: str
  sample: 2 replicas x metric 0.93 / target 0.6 recommends 4; 2 -> 4
history:
  description:
    - The recommendations within the window as C([unix_seconds, replicas]) pairs, as recorded in
      the history label (in check mode, as they would be).
  returned: always
  type: list
  elements: list
  sample: [[1767225600, 2], [1767225660, 4]]
running_tasks:
  description: Running tasks on ready nodes at the end (before any change in check mode or without O(wait)).
  returned: always
  type: int
  sample: 4
seconds:
  description: Seconds spent waiting for convergence (0 without a change or without O(wait)).
  returned: always
  type: float
  sample: 12.5
'''

from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale import (
    DEFAULT_SETTINGS,
    AutoscaleError,
    check_settings,
)
from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale_run import autoscale_service
from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    DockerException,
    SwarmError,
    get_client,
    swarm_module,
)


def main():
    argument_spec = dict(
        name=dict(type='str', required=True, aliases=['service']),
        stack=dict(type='str'),
        prometheus_url=dict(type='str', required=True),
        prometheus_username=dict(type='str'),
        prometheus_password=dict(type='str', no_log=True),
        prometheus_validate_certs=dict(type='bool', default=True),
        prometheus_ca_path=dict(type='path'),
        prometheus_timeout=dict(type='int', default=30),
        query=dict(type='str', required=True),
        target=dict(type='float', required=True),
        tolerance=dict(type='float', default=DEFAULT_SETTINGS['tolerance']),
        min_replicas=dict(type='int', default=DEFAULT_SETTINGS['min_replicas']),
        max_replicas=dict(type='int', required=True),
        scale_up_max_step=dict(type='int', default=DEFAULT_SETTINGS['scale_up_max_step']),
        scale_up_max_percent=dict(type='int', default=DEFAULT_SETTINGS['scale_up_max_percent']),
        scale_down_stabilization=dict(type='int', default=DEFAULT_SETTINGS['scale_down_stabilization']),
    )
    module = swarm_module(argument_spec, required_together=[['prometheus_username', 'prometheus_password']])

    def log(text):
        module.log('swarm_service_autoscale decision%s: %s'
                   % (' (check mode, not applied)' if module.check_mode else '', text))

    # The run itself is module_utils/autoscale_run.py, which the in-swarm autoscaler service
    # (roles/autoscale) runs too; it fills result as it goes, so a failure still reports it.
    result = dict(changed=False, seconds=0.0)
    try:
        check_settings(module.params)
        autoscale_service(get_client(module.params), module.params, log, module.warn,
                          module.check_mode, result)
    except (AutoscaleError, SwarmError, DockerException) as exc:
        module.fail_json(msg=str(exc), **result)

    if module._diff and 'name' in result:
        result['diff'] = dict(before={result['name']: result['current_replicas']},
                              after={result['name']: result['applied_replicas']})
    module.exit_json(**result)


if __name__ == '__main__':
    main()
