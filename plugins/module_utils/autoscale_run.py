# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One autoscaling run of one Swarm service: read the metric from Prometheus, decide with the
pure rules of module_utils/autoscale.py, record the history label, set the replica count and,
if asked, wait for it.

The one implementation behind both runners of the autoscaler (issue 19): the module
boxoffice.pretix.swarm_service_autoscale (autoscale.yml, an AWX schedule) and the in-swarm
autoscaler service (roles/autoscale/files/autoscaler.py, a loop every few seconds). Neither
holds logic of its own beyond turning its input into the plain params dict taken here.
"""

from __future__ import annotations

import json
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.urls import ConnectionError as UrlConnectionError, open_url
from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale import (
    HISTORY_LABEL,
    SETTINGS,
    AutoscaleError,
    decide,
    history_labels,
    metric_from_response,
    read_history,
)
from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    count_running,
    engine_now,
    ready_node_ids,
    replicated_services,
    service_mode,
    service_tasks,
    update_service_spec,
    wait_service,
)

# Update states in which Swarm has not settled the service's last change. Any spec written then,
# if only a label, becomes the PreviousSpec that a rollback returns to, so nothing is written.
UNSETTLED_UPDATE_STATES = ('updating', 'paused', 'rollback_started', 'rollback_paused')


def query_metric(params):
    """(value, None) or (None, why) for the query; AutoscaleError when Prometheus cannot answer.

    params holds prometheus_url, query, prometheus_timeout, prometheus_validate_certs,
    prometheus_ca_path, prometheus_username and prometheus_password (None for no user).
    """
    base = params['prometheus_url'].rstrip('/')
    url = '%s/api/v1/query?%s' % (base, urlencode({'query': params['query']}))
    refused = None
    try:
        body = open_url(url, method='GET', headers={'Accept': 'application/json'},
                        timeout=params['prometheus_timeout'],
                        validate_certs=params['prometheus_validate_certs'],
                        ca_path=params['prometheus_ca_path'],
                        url_username=params['prometheus_username'],
                        url_password=params['prometheus_password'],
                        force_basic_auth=bool(params['prometheus_username'])).read()
    except HTTPError as exc:
        # Prometheus explains a refused query (400, 422, 503) in a JSON body; a proxy does not.
        body, refused = exc.read(), exc
    except (URLError, OSError, UrlConnectionError) as exc:
        raise AutoscaleError('Cannot reach Prometheus at %s: %s. Check prometheus_url, and for '
                             'https prometheus_ca_path. Nothing was changed.' % (base, exc))
    try:
        answer = json.loads(body)
    except ValueError:
        if refused:
            raise AutoscaleError('Prometheus at %s answered HTTP %d %s: check prometheus_url and, '
                                 'behind a proxy, prometheus_username and prometheus_password. '
                                 'Nothing was changed.' % (base, refused.code, refused.reason))
        raise AutoscaleError('%s/api/v1/query answered something else than JSON: is prometheus_url '
                             'the base URL of Prometheus? Nothing was changed.' % base)
    try:
        return metric_from_response(answer)
    except AutoscaleError as exc:
        raise AutoscaleError('%s Query: %s. Nothing was changed.' % (exc, params['query']))


def autoscale_service(client, params, log, warn, check_mode, result=None):
    """Decide, then apply and (with params['wait']) wait; returns the result dict.

    client is a docker.DockerClient on a Swarm manager. params holds the options of
    swarm_service_autoscale by their names (name, stack, the prometheus_* options, query, the
    SETTINGS, wait, wait_timeout), check_settings() already passed on them. log(text) is called
    once per decision, with the decision and its inputs as one line of JSON; warn(text) with a
    warning for the operator. With check_mode the decision is taken and reported, and neither the
    replica count nor the history label is written.

    result is filled as the run goes (a new dict by default), so a caller that catches the
    AutoscaleError, SwarmError or DockerException of a failed run still has what was decided.
    """
    result = {} if result is None else result
    result.setdefault('changed', False)
    result.setdefault('seconds', 0.0)
    settings = dict((key, params[key]) for key in SETTINGS)
    [service] = replicated_services(client, [params['name']], params.get('stack'), 'autoscaled')
    spec = service['Spec']
    current = service_mode(spec)[1]
    now = engine_now(client).timestamp()
    labels = dict(spec.get('Labels') or {})
    history, warning = read_history(labels.get(HISTORY_LABEL), now, current)
    if warning:
        warn(warning)
    update_state = (service.get('UpdateStatus') or {}).get('State')
    if update_state in UNSETTLED_UPDATE_STATES:
        metric, missing = None, ('the service\'s update is %s, and a change now would become what a '
                                 'rollback returns to' % update_state)
    else:
        metric, missing = query_metric(params)
    decision = decide(current, metric, history, now, settings)
    to_record = decision['history']
    if to_record is None and warning and decision['recommendation'] is not None:
        # A decision replaces a label that could not be read, with what read_history put instead.
        to_record = history
    recorded = history if to_record is None else to_record
    result.update(
        name=spec['Name'], metric=metric, ratio=decision['ratio'], current_replicas=current,
        recommendation=decision['recommendation'], desired_replicas=decision['desired'],
        applied_replicas=decision['applied'], changed=decision['applied'] != current,
        reason='%s: %s' % (missing, decision['reason']) if missing else decision['reason'],
        history=[list(entry) for entry in recorded],
        running_tasks=count_running(service_tasks(client, service['ID']), ready_node_ids(client)))
    log(json.dumps(dict(settings, query=params['query'], **result), sort_keys=True))

    new_labels = history_labels(labels, to_record)
    if check_mode or (not result['changed'] and new_labels == labels):
        return result
    spec['Mode']['Replicated']['Replicas'] = decision['applied']
    spec['Labels'] = new_labels
    update_service_spec(client, service, spec)
    if result['changed'] and params.get('wait'):
        result['running_tasks'], result['seconds'] = wait_service(
            client, service, decision['applied'], params['wait_timeout'])
    return result
