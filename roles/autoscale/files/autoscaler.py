#!/usr/bin/python3
# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The in-swarm autoscaler: every few seconds, one autoscaling run per rule, with the same code as
the module boxoffice.pretix.swarm_service_autoscale (module_utils/autoscale_run.py).

    autoscaler.py [CONFIG]                 # CONFIG, else $AUTOSCALER_CONFIG, else DEFAULT_CONFIG
    autoscaler.py --healthcheck [CONFIG]   # exit 0 while the loop is alive

CONFIG is JSON, written by the autoscale role (tasks/service.yml):
    {"interval": 15, "stack": "", "prometheus": {"url": "http://prometheus:9090", "timeout": 10},
     "rules": [{"service": "pretix-web", "query": "...", "target": 0.7, "min": 2, "max": 10,
                "tolerance": 0.1, "scale_up_max_step": 4, "scale_up_max_percent": 100,
                "scale_down_stabilization": 300}]}
A rule may leave out min and the four settings after max; HPA's defaults apply then. A rule that
cannot work (a missing field, min above max, ...) is reported at the start and left out.

Every line on stdout is one JSON object with an "event": start, decision (the run's inputs and
result, as the module logs them), warning, error, stop. An unreachable Prometheus, a missing
service or a Docker error is an error line for that rule and that round; the loop goes on, and
reconnects to Docker at the next rule. Runs never wait for their rollout (wait is false), so one
slow service does not hold the others up. SIGTERM (and SIGINT) ends the loop after the rule being
evaluated, with exit status 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback

from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale import (
    DEFAULT_SETTINGS,
    AutoscaleError,
    check_settings,
)
from ansible_collections.boxoffice.pretix.plugins.module_utils.autoscale_run import autoscale_service
from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    DEFAULT_API_TIMEOUT,
    DEFAULT_DOCKER_HOST,
    DockerException,
    RequestException,
    SwarmError,
    get_client,
)

CONFIG_ENV = 'AUTOSCALER_CONFIG'
DEFAULT_CONFIG = '/etc/boxoffice/autoscaler.json'
HEARTBEAT_ENV = 'AUTOSCALER_HEARTBEAT'
DEFAULT_HEARTBEAT = '/tmp/autoscaler.heartbeat'
DEFAULT_INTERVAL = 15
DEFAULT_PROMETHEUS_TIMEOUT = 10
# A rule's fields, by the name autoscale_service() takes them.
RULE_FIELDS = dict(min='min_replicas', max='max_replicas', tolerance='tolerance',
                   scale_up_max_step='scale_up_max_step', scale_up_max_percent='scale_up_max_percent',
                   scale_down_stabilization='scale_down_stabilization')


def emit(event, **fields):
    """One JSON line on stdout, the service's log."""
    sys.stdout.write(json.dumps(dict(fields, event=event), sort_keys=True, default=str) + '\n')
    sys.stdout.flush()


def rule_params(rule, prometheus, stack):
    """autoscale_service()'s params for one rule; AutoscaleError when the rule cannot work."""
    if not isinstance(rule, dict):
        raise AutoscaleError('a rule must be a mapping, got %r' % (rule,))
    missing = [key for key in ('service', 'query', 'target', 'max') if rule.get(key) in (None, '')]
    if missing:
        raise AutoscaleError('the rule for %s has no %s' % (rule.get('service') or '?', ', '.join(missing)))
    params = dict(
        name=str(rule['service']), stack=stack or None, query=str(rule['query']),
        prometheus_url=prometheus['url'], prometheus_timeout=prometheus['timeout'],
        prometheus_validate_certs=True, prometheus_ca_path=None,
        prometheus_username=None, prometheus_password=None,
        wait=False, wait_timeout=0)
    try:
        params['target'] = float(rule['target'])
        for field, name in RULE_FIELDS.items():
            value = rule.get(field)
            params[name] = DEFAULT_SETTINGS[name] if value is None else value
        params['tolerance'] = float(params['tolerance'])
        for name in RULE_FIELDS.values():
            if name != 'tolerance':
                params[name] = int(params[name])
    except (TypeError, ValueError) as exc:
        raise AutoscaleError('the rule for %s has a setting that is no number: %s' % (params['name'], exc))
    try:
        check_settings(params)
    except AutoscaleError as exc:
        raise AutoscaleError('the rule for %s: %s' % (params['name'], exc))
    return params


def load_config(path):
    """(config, problems) from the JSON file at path: config holds interval, prometheus and the
    rules as autoscale_service()'s params; problems says which rules were left out and why.
    Raises OSError or ValueError when the file cannot be used at all."""
    with open(path, encoding='utf-8') as handle:
        raw = json.load(handle)
    if not isinstance(raw, dict):
        raise ValueError('the config must be a JSON object')
    interval = raw.get('interval', DEFAULT_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise ValueError('interval must be a number of seconds above 0, got %r' % (interval,))
    prometheus = raw.get('prometheus') or {}
    if not prometheus.get('url'):
        raise ValueError('prometheus.url is missing: the base URL of Prometheus\' HTTP API')
    prometheus = dict(url=str(prometheus['url']),
                      timeout=int(prometheus.get('timeout') or DEFAULT_PROMETHEUS_TIMEOUT))
    rules = raw.get('rules') or []
    if not isinstance(rules, list):
        raise ValueError('rules must be a list')
    params, problems = [], []
    for rule in rules:
        try:
            params.append(rule_params(rule, prometheus, raw.get('stack')))
        except AutoscaleError as exc:
            problems.append('%s; the rule is left out.' % exc)
    return dict(interval=interval, prometheus=prometheus, rules=params), problems


def heartbeat_limit(config):
    """Seconds after the last finished rule that the loop counts as stuck: two intervals and one
    rule whose Prometheus and Docker calls all take their whole timeouts."""
    return 2 * config['interval'] + config['prometheus']['timeout'] + 2 * DEFAULT_API_TIMEOUT


def connect_docker():
    """A client for the engine at $DOCKER_HOST, by default the manager's socket."""
    return get_client(dict(docker_host=os.environ.get('DOCKER_HOST') or DEFAULT_DOCKER_HOST))


class Autoscaler:
    """The loop's state: the config, the Docker client (None until connected, and after a Docker
    error, so the next rule reconnects) and where the heartbeat goes. connect and run are the
    Docker connection and the run of one rule; tests hand in others."""

    def __init__(self, config, connect=connect_docker, run=autoscale_service, heartbeat=None):
        self.config = config
        self.connect = connect
        self.run = run
        self.heartbeat = heartbeat or os.environ.get(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT
        self.client = None

    def evaluate(self, params):
        """One autoscaling run for one rule; every failure becomes an error line."""
        name = params['name']
        try:
            if self.client is None:
                self.client = self.connect()
            self.run(self.client, params,
                     lambda text: emit('decision', **json.loads(text)),
                     lambda text: emit('warning', name=name, warning=text),
                     False)
        except AutoscaleError as exc:
            emit('error', name=name, error=str(exc))
        except (SwarmError, DockerException, RequestException) as exc:
            emit('error', name=name, error=str(exc))
            self.disconnect()
        except Exception as exc:  # pylint: disable=broad-exception-caught  # one rule's bug must not stop the others
            emit('error', name=name, error='unexpected %s: %s' % (type(exc).__name__, exc),
                 traceback=traceback.format_exc())
            self.disconnect()

    def disconnect(self):
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # pylint: disable=broad-exception-caught  # a broken client is dropped anyway
                pass
            self.client = None

    def beat(self):
        try:
            with open(self.heartbeat, 'w', encoding='utf-8') as handle:
                handle.write('%d\n' % time.time())
        except OSError as exc:
            emit('error', error='cannot write the heartbeat %s: %s' % (self.heartbeat, exc))

    def round(self, stop):
        """Every rule once, in the config's order, until stop is set."""
        for params in self.config['rules']:
            if stop.is_set():
                return
            self.evaluate(params)
            self.beat()
        self.beat()

    def loop(self, stop):
        """A round every interval seconds (a round that took longer starts the next at once)."""
        next_round = time.monotonic()
        while not stop.is_set():
            self.round(stop)
            next_round = max(next_round + self.config['interval'], time.monotonic())
            stop.wait(next_round - time.monotonic())
        self.disconnect()


def healthcheck(config, heartbeat=None):
    """0 when a rule or a round finished within heartbeat_limit(), else 1."""
    path = heartbeat or os.environ.get(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT
    try:
        age = time.time() - os.path.getmtime(path)
    except OSError as exc:
        print('no heartbeat: %s' % exc)
        return 1
    if age > heartbeat_limit(config):
        print('the last rule finished %ds ago, more than %ds' % (age, heartbeat_limit(config)))
        return 1
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    check = argv[:1] == ['--healthcheck']
    if check:
        argv = argv[1:]
    path = argv[0] if argv else os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        config, problems = load_config(path)
    except (OSError, ValueError) as exc:
        emit('error', error='cannot use the config %s: %s' % (path, exc))
        return 2
    if check:
        return healthcheck(config)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    emit('start', config=path, interval=config['interval'], prometheus_url=config['prometheus']['url'],
         services=[params['name'] for params in config['rules']])
    for problem in problems:
        emit('error', error=problem)
    Autoscaler(config).loop(stop)
    emit('stop')
    return 0


if __name__ == '__main__':
    sys.exit(main())
