# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The decision of boxoffice.pretix.swarm_service_autoscale: Kubernetes' Horizontal Pod
Autoscaler rules for one Swarm service, as pure functions of their inputs (no Docker, no HTTP,
no clock: the caller passes `now`), so every runner of the autoscaler takes the same decision.

One run, in the order the HPA controller applies its rules:
1. recommendation: ceil(current x metric / target); the current count when metric / target is
   within `tolerance` of 1, so noise around the target never scales. This raw recommendation is
   what the history records.
2. desired: the scale-down stabilisation window. The count never goes below the highest
   recommendation made within the last `scale_down_stabilization` seconds, this run's included,
   so a brief dip never scales down and a sustained one does once the window has passed.
   Scale-up is not stabilised: a higher recommendation is taken at once.
3. applied: the scale-up rate limit, then min/max. One run adds at most the larger of
   `scale_up_max_step` replicas and `scale_up_max_percent` percent of the current count (HPA's
   default policies, +4 pods or +100 %, with one run as the period); min_replicas and
   max_replicas then bound the result, and win over the rate limit.

A run without a usable metric (no sample, NaN, infinity) takes no decision: nothing is
scaled and nothing is recorded. A service at 0 replicas has been stopped on purpose, so it is
left alone, as the HPA does.

The history lives on the service, in the label HISTORY_LABEL, so that it survives between runs
that share nothing else (a fresh AWX job, another manager, a container restarted): compact JSON
[[unix_seconds, replicas], ...] of the recommendations still inside the window, oldest first,
stamped by the Docker engine's clock so that all runners agree on it.
"""

from __future__ import annotations

import json
import math

HISTORY_LABEL = 'boxoffice.autoscale.recommendations'
# HPA's default tolerance (--horizontal-pod-autoscaler-tolerance).
DEFAULT_TOLERANCE = 0.1
# The settings a decision takes (check_settings(), decide()), and the defaults of those that a
# runner of the autoscaler may leave out: HPA's, with one run as its period.
SETTINGS = ('target', 'tolerance', 'min_replicas', 'max_replicas', 'scale_up_max_step',
            'scale_up_max_percent', 'scale_down_stabilization')
DEFAULT_SETTINGS = dict(tolerance=DEFAULT_TOLERANCE, min_replicas=1, scale_up_max_step=4,
                        scale_up_max_percent=100, scale_down_stabilization=300)
# Numbers that are whole or on the tolerance's edge on paper are not in floating point (7 x 1.1
# / 0.7 is 11.000000000000002, 1.1 / 1.0 - 1 is 0.10000000000000009); rounded to this many
# places first, they neither add a replica in ceil() nor fall out of the tolerance band.
RATIO_DIGITS = 9


class AutoscaleError(Exception):
    """Bad settings or an unusable Prometheus answer; the message is meant for the operator."""


def check_settings(settings):
    """Refuse settings the rules cannot work with, naming the option and the value.

    settings holds target, tolerance, min_replicas, max_replicas, scale_up_max_step,
    scale_up_max_percent and scale_down_stabilization.
    """
    errors = []
    if not (math.isfinite(settings['target']) and settings['target'] > 0):
        errors.append('target must be a number above 0, got %s: the metric is divided by it'
                      % settings['target'])
    if not (math.isfinite(settings['tolerance']) and settings['tolerance'] >= 0):
        errors.append('tolerance must be 0 or more, got %s' % settings['tolerance'])
    if settings['min_replicas'] < 1:
        errors.append('min_replicas must be 1 or more, got %d: from 0 replicas the ratio '
                      'rule can never scale up again' % settings['min_replicas'])
    if settings['max_replicas'] < settings['min_replicas']:
        errors.append('min_replicas (%d) must not be above max_replicas (%d)'
                      % (settings['min_replicas'], settings['max_replicas']))
    if settings['scale_up_max_step'] < 1:
        errors.append('scale_up_max_step must be 1 or more, got %d' % settings['scale_up_max_step'])
    if settings['scale_up_max_percent'] < 0:
        errors.append('scale_up_max_percent must be 0 or more, got %d' % settings['scale_up_max_percent'])
    if settings['scale_down_stabilization'] < 0:
        errors.append('scale_down_stabilization must be 0 or more seconds, got %d'
                      % settings['scale_down_stabilization'])
    if errors:
        raise AutoscaleError('%s. Nothing was changed.' % '; '.join(errors))


def metric_from_response(answer):
    """The value of a Prometheus /api/v1/query answer (parsed JSON): (value, None), or
    (None, why) for missing data, on which nothing may be scaled: no sample, NaN or an infinity.

    An error answer, a range vector or more than one sample is a mistake in the query and
    raises AutoscaleError.
    """
    if not isinstance(answer, dict) or answer.get('status') != 'success':
        if isinstance(answer, dict) and answer.get('error'):
            raise AutoscaleError('Prometheus refused the query (%s): %s.'
                                 % (answer.get('errorType') or 'error', answer['error']))
        raise AutoscaleError('Prometheus gave no result: %r.' % (answer,))
    data = answer.get('data') or {}
    kind, result = data.get('resultType'), data.get('result')
    if kind == 'scalar':
        sample = result
    elif kind == 'vector':
        if not result:
            return None, 'the query returned no sample'
        if len(result) > 1:
            raise AutoscaleError(
                'the query returned %d samples (%s); it must return one: aggregate it, e.g. '
                'avg(...) or sum(...) / count(...).'
                % (len(result), ', '.join(json.dumps(item.get('metric') or {}, sort_keys=True)
                                          for item in result[:3])))
        sample = result[0].get('value')
    else:
        raise AutoscaleError('the query returned a %s; it must return an instant vector with one '
                             'sample, or a scalar.' % kind)
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError):
        raise AutoscaleError('Prometheus returned a sample without a number: %r.' % (sample,))
    if not math.isfinite(value):
        return None, 'the query returned %s' % sample[1]
    return value, None


def read_history(text, now, current):
    """The recorded recommendations [(seconds, replicas), ...] from the label's text.

    Returns (history, warning). No label is an empty history. A label that cannot be read is
    replaced by one recommendation of the current count made now, so that no scale-down
    happens before a whole window has passed; the warning says so.
    """
    if not text:
        return [], None
    try:
        entries = json.loads(text)
        history = [(int(stamp), int(replicas)) for stamp, replicas in entries
                   if not isinstance(stamp, bool) and not isinstance(replicas, bool)]
        if len(history) != len(entries):
            raise ValueError('not a pair of whole numbers')
    except (TypeError, ValueError) as exc:
        return [(int(now), current)], (
            'The label %s could not be read (%s) and starts again; no scale-down happens '
            'before a whole stabilisation window has passed.' % (HISTORY_LABEL, exc))
    return history, None


def write_history(history):
    """The label's text for history: compact JSON, smallest first by time."""
    return json.dumps(sorted([int(stamp), int(replicas)] for stamp, replicas in history),
                      separators=(',', ':'))


def history_labels(labels, history):
    """The service's labels with history recorded: as they are when history is None (no
    decision was taken), without the history label when history is empty (no window)."""
    if history is None:
        return labels
    recorded = dict((key, value) for key, value in labels.items() if key != HISTORY_LABEL)
    if history:
        recorded[HISTORY_LABEL] = write_history(history)
    return recorded


def held_labels(labels, now, replicas):
    """The service's labels with a count set by hand recorded as a recommendation made now.

    The autoscaler then keeps that count for its scale-down stabilisation window, as it keeps
    one it recommended itself, instead of undoing it at its next run; a higher recommendation
    still scales up at once. A label that cannot be read starts again with this entry; entries
    the window dropped are ignored by every read and go at the autoscaler's next write.
    """
    history, unreadable = read_history(labels.get(HISTORY_LABEL), now, replicas)
    return history_labels(labels, ([] if unreadable else history) + [(int(now), replicas)])


def prune_history(history, now, window):
    """The recommendations made less than window seconds before now.

    A stamp as far in the future is a clock that jumped, not a recommendation, and goes too.
    """
    return [(stamp, replicas) for stamp, replicas in history if abs(now - stamp) < window]


def scale_up_limit(current, step, percent):
    """The most replicas one run may reach from current: +step or +percent %, the larger."""
    return max(current + step, int(math.ceil(round(current * (1 + percent / 100.0), RATIO_DIGITS))))


def decide(current, metric, history, now, settings):
    """One autoscaling decision; see the module docstring for the rules.

    metric is the query's value, or None when there is none to use (then nothing is decided;
    the caller says why). history is read_history()'s list, now the clock in Unix seconds,
    settings as check_settings() takes them.
    Returns a dict: ratio, recommendation, desired, applied (the replica count to set), reason
    (one line for people) and history (the list to record, or None when nothing is recorded).
    """
    decision = dict(current=current, metric=metric, ratio=None, recommendation=None,
                    desired=current, applied=current, history=None)
    if metric is None:
        return dict(decision, reason='no decision, %d replicas kept' % current)
    if current == 0:
        return dict(decision, reason='the service runs 0 replicas, stopped on purpose: it is left '
                                     'alone until it runs at least one')
    ratio = metric / settings['target']
    within = round(abs(ratio - 1.0), RATIO_DIGITS) <= settings['tolerance']
    recommendation = current if within else int(math.ceil(round(current * ratio, RATIO_DIGITS)))
    window = settings['scale_down_stabilization']
    recent = prune_history(history, now, window) if window else []
    # HPA's stabilised count: never below the highest recent recommendation, never held up.
    floor = max([recommendation] + [replicas for dummy, replicas in recent])
    # What is written to the label: nothing when the window is off; else this recommendation with
    # the window's others. A recommendation at or below min_replicas is not recorded, and then the
    # label is left as it is (None): the window's highest can never take the count below the
    # minimum, the entries the window dropped are ignored by the next read, and an idle or
    # shrinking service is not rewritten every run.
    if not window:
        to_record = []
    elif recommendation > settings['min_replicas']:
        to_record = recent + [(int(now), recommendation)]
    else:
        to_record = None
    desired = min(max(current, recommendation), floor)
    up_limit = scale_up_limit(current, settings['scale_up_max_step'], settings['scale_up_max_percent'])
    bounded = min(desired, up_limit)
    applied = min(max(bounded, settings['min_replicas']), settings['max_replicas'])

    if within:
        why = ['metric %g is within %g%% of the target %g: %d replicas recommended'
               % (metric, settings['tolerance'] * 100, settings['target'], recommendation)]
    else:
        why = ['%d replicas x metric %g / target %g recommends %d'
               % (current, metric, settings['target'], recommendation)]
    if recommendation < desired < current:
        why.append('the highest recommendation of the last %ds is %d' % (window, floor))
    elif recommendation < desired:
        why.append('a recommendation of the last %ds was %d or more, so no scale-down yet'
                   % (window, current))
    if desired > up_limit:
        why.append('scale-up limited to %d this run (+%d or +%d%%)'
                   % (up_limit, settings['scale_up_max_step'], settings['scale_up_max_percent']))
    if applied != bounded:
        why.append('bounded to %s %d' % ('min_replicas' if applied > bounded else 'max_replicas', applied))
    why.append('%d -> %d' % (current, applied) if applied != current else 'keep %d' % current)
    return dict(decision, ratio=ratio, recommendation=recommendation, desired=desired,
                applied=applied, history=to_record, reason='; '.join(why))
