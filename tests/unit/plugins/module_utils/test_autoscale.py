"""The HPA rules of module_utils/autoscale.py: pure functions, fed numbers and a clock."""

import json
import re

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils import autoscale as au

NOW = 1767225600  # 2026-01-01T00:00:00Z


def settings(**overrides):
    return dict(dict(target=1.0, tolerance=0.1, min_replicas=1, max_replicas=20, scale_up_max_step=4,
                     scale_up_max_percent=100, scale_down_stabilization=300), **overrides)


def run(runs, current, **overrides):
    """Feed (seconds after NOW, metric) pairs through decide() as successive runs would, each one
    applying its decision and recording its history; returns the decisions."""
    history, decisions = [], []
    for offset, metric in runs:
        decision = au.decide(current, metric, history, NOW + offset, settings(**overrides))
        decisions.append(decision)
        current = decision['applied']
        if decision['history'] is not None:
            history = decision['history']
    return decisions


@pytest.mark.parametrize('metric', [0.9, 0.95, 1.0, 1.05, 1.1])
def test_within_tolerance_nothing_changes(metric):
    decision = au.decide(4, metric, [], NOW, settings())
    assert (decision['recommendation'], decision['applied']) == (4, 4)
    assert 'within 10% of the target 1' in decision['reason'] and decision['reason'].endswith('keep 4')


@pytest.mark.parametrize('current, metric, target, expected', [
    (4, 1.11, 1.0, 5),     # just outside the band: ceil(4.44)
    (3, 1.5, 1.0, 5),      # ceil(4.5)
    (7, 1.1, 0.7, 11),     # 11.000000000000002 in floating point: 11, not 12
    (3, 0.3, 0.1, 9),      # 8.999999999999998 in floating point
    (10, 0.35, 1.0, 4),    # ceil(3.5) on the way down
    (5, 0.0, 1.0, 0),      # no load recommends 0; min_replicas bounds it
])
def test_recommendation_is_the_ceiling_of_the_ratio(current, metric, target, expected):
    decision = au.decide(current, metric, [], NOW, settings(target=target, scale_up_max_step=100,
                                                             scale_down_stabilization=0))
    assert decision['recommendation'] == expected
    assert decision['applied'] == max(expected, 1)


def test_max_replicas_bounds_the_scale_up():
    decision = au.decide(8, 3.0, [], NOW, settings(max_replicas=10, scale_up_max_step=50))
    assert (decision['recommendation'], decision['desired'], decision['applied']) == (24, 24, 10)
    assert 'bounded to max_replicas 10' in decision['reason']


def test_min_replicas_bounds_the_scale_down():
    decision = au.decide(6, 0.1, [], NOW, settings(min_replicas=2, scale_down_stabilization=0))
    assert (decision['recommendation'], decision['applied']) == (1, 2)
    assert 'bounded to min_replicas 2' in decision['reason']


def test_a_service_outside_the_bounds_is_brought_inside_them():
    # Within tolerance, so the metric says nothing: the bounds alone move the count.
    assert au.decide(12, 1.0, [], NOW, settings(max_replicas=10))['applied'] == 10
    # min_replicas wins over the step limit: 1 replica goes straight to 8.
    assert au.decide(1, 1.0, [], NOW, settings(min_replicas=8, max_replicas=10))['applied'] == 8


@pytest.mark.parametrize('current, step, percent, limit', [
    (2, 4, 100, 6),     # +4 is more than +100 %
    (10, 4, 100, 20),   # +100 % is more than +4
    (10, 4, 0, 14),     # no percent policy: the step alone
    (3, 1, 50, 5),      # ceil(4.5)
])
def test_scale_up_is_limited_per_run(current, step, percent, limit):
    decision = au.decide(current, 10.0, [], NOW, settings(scale_up_max_step=step, scale_up_max_percent=percent,
                                                          max_replicas=100))
    assert decision['desired'] == current * 10
    assert decision['applied'] == limit
    assert 'scale-up limited to %d this run' % limit in decision['reason']


def test_scale_up_in_steps_reaches_the_recommendation():
    decisions = run([(0, 5.0), (60, 2.5), (120, 1.25)], current=2, scale_up_max_percent=0)
    assert [d['applied'] for d in decisions] == [6, 10, 13]


def test_a_dip_within_the_window_does_not_scale_down():
    # 4 replicas on target, a dip to a quarter of the load for 2 minutes, then back.
    decisions = run([(0, 1.0), (60, 0.25), (120, 0.25), (180, 1.0), (240, 1.0)], current=4)
    assert [d['recommendation'] for d in decisions] == [4, 1, 1, 4, 4]
    assert [d['applied'] for d in decisions] == [4, 4, 4, 4, 4]
    assert 'a recommendation of the last 300s was 4 or more, so no scale-down yet' in decisions[1]['reason']


def test_a_sustained_low_scales_down_once_the_window_has_passed():
    decisions = run([(0, 1.0)] + [(60 * minute, 0.25) for minute in range(1, 8)], current=4)
    # The last recommendation of 4 was made at 0 s; from 300 s on the window holds only ones.
    assert [d['applied'] for d in decisions] == [4, 4, 4, 4, 4, 1, 1, 1]


def test_the_scale_down_goes_to_the_highest_recommendation_of_the_window():
    history = [(NOW - 250, 6), (NOW - 100, 3)]
    decision = au.decide(8, 0.25, history, NOW, settings())
    assert (decision['recommendation'], decision['desired'], decision['applied']) == (2, 6, 6)
    assert 'the highest recommendation of the last 300s is 6' in decision['reason']


def test_scale_up_is_never_held_by_the_window():
    decision = au.decide(2, 3.0, [(NOW - 10, 1)], NOW, settings())
    assert decision['applied'] == 6


def test_without_a_window_nothing_is_kept():
    decisions = run([(0, 1.0), (60, 0.25)], current=4, scale_down_stabilization=0)
    assert [d['applied'] for d in decisions] == [4, 1]
    assert [d['history'] for d in decisions] == [[], []]


def test_the_history_keeps_only_the_window_and_this_run():
    history = [(NOW - 400, 9), (NOW - 300, 8), (NOW - 299, 7), (NOW - 5, 5), (NOW + 1000, 9)]
    decision = au.decide(8, 0.5, history, NOW + 0.7, settings())
    # Exactly a window old is out (HPA keeps only what is newer than the cutoff); so is a stamp
    # from a clock that jumped; this run's recommendation is added with whole seconds.
    assert decision['history'] == [(NOW - 299, 7), (NOW - 5, 5), (NOW, 4)]
    assert decision['applied'] == 7


def test_history_label_round_trip_is_compact_json():
    text = au.write_history([(NOW, 4), (NOW - 60, 5)])
    assert text == '[[%d,5],[%d,4]]' % (NOW - 60, NOW)
    assert au.read_history(text, NOW, 3) == ([(NOW - 60, 5), (NOW, 4)], None)
    assert au.read_history(None, NOW, 3) == ([], None)


@pytest.mark.parametrize('text', ['not json', '{"a": 1}', '[[1, 2, 3]]', '[[true, 2]]', '7', '[["x", 2]]'])
def test_an_unreadable_history_holds_the_current_count_for_a_window(text):
    history, warning = au.read_history(text, NOW + 0.5, 5)
    assert history == [(NOW, 5)]
    assert au.HISTORY_LABEL in warning and 'no scale-down happens' in warning
    assert au.decide(5, 0.2, history, NOW + 299, settings())['applied'] == 5
    assert au.decide(5, 0.2, history, NOW + 300, settings())['applied'] == 1


def test_history_labels_keep_the_other_labels():
    labels = {'boxoffice.component': 'pretix', au.HISTORY_LABEL: '[[1,2]]'}
    assert au.history_labels(labels, None) is labels
    assert au.history_labels(labels, [(NOW, 3)]) == {'boxoffice.component': 'pretix',
                                                    au.HISTORY_LABEL: '[[%d,3]]' % NOW}
    assert au.history_labels(labels, []) == {'boxoffice.component': 'pretix'}


@pytest.mark.parametrize('text, kept', [(None, []), ('[[%d,7]]' % (NOW - 10), [[NOW - 10, 7]]), ('not json', [])])
def test_a_count_set_by_hand_is_held_for_a_window_as_a_recommendation(text, kept):
    labels = {'boxoffice.component': 'pretix'}
    if text:
        labels[au.HISTORY_LABEL] = text
    held = au.held_labels(labels, NOW + 0.5, 6)
    assert held['boxoffice.component'] == 'pretix'
    assert json.loads(held[au.HISTORY_LABEL]) == kept + [[NOW, 6]]
    history = au.read_history(held[au.HISTORY_LABEL], NOW + 60, 6)[0]
    # Idle: the autoscaler keeps the count for the window, then scales down; a higher
    # recommendation is taken at once.
    assert au.decide(6, 0.1, history, NOW + 299, settings())['applied'] == 6
    assert au.decide(6, 0.1, history, NOW + 300, settings())['applied'] == 1
    assert au.decide(6, 2.0, history, NOW + 60, settings())['applied'] == 12


def test_missing_metric_decides_nothing_and_records_nothing():
    decision = au.decide(3, None, [(NOW - 10, 7)], NOW, settings())
    assert (decision['applied'], decision['recommendation'], decision['history']) == (3, None, None)
    assert decision['reason'] == 'no decision, 3 replicas kept'


def test_a_service_at_zero_replicas_is_left_alone():
    decision = au.decide(0, 5.0, [], NOW, settings(min_replicas=2))
    assert (decision['applied'], decision['history']) == (0, None)
    assert 'stopped on purpose' in decision['reason']


def vector(*values):
    return {'status': 'success', 'data': {'resultType': 'vector', 'result': [
        {'metric': {'instance': 'web-%d' % index}, 'value': [NOW, value]} for index, value in enumerate(values)]}}


@pytest.mark.parametrize('answer, expected', [
    (vector('0.75'), (0.75, None)),
    ({'status': 'success', 'data': {'resultType': 'scalar', 'result': [NOW, '3']}}, (3.0, None)),
    (vector(), (None, 'the query returned no sample')),
    (vector('NaN'), (None, 'the query returned NaN')),
    (vector('+Inf'), (None, 'the query returned +Inf')),
])
def test_metric_from_a_prometheus_answer(answer, expected):
    assert au.metric_from_response(answer) == expected


@pytest.mark.parametrize('answer, message', [
    (vector('1', '2'), 'the query returned 2 samples ({"instance": "web-0"}, {"instance": "web-1"}); it must return one'),
    ({'status': 'error', 'errorType': 'bad_data', 'error': 'parse error at char 4'},
     'Prometheus refused the query (bad_data): parse error at char 4.'),
    ({'status': 'success', 'data': {'resultType': 'matrix', 'result': []}}, 'the query returned a matrix'),
    (vector('many'), 'Prometheus returned a sample without a number'),
    ([], 'Prometheus gave no result'),
])
def test_unusable_prometheus_answers_are_refused(answer, message):
    with pytest.raises(au.AutoscaleError, match=re.escape(message)):
        au.metric_from_response(answer)


def test_valid_settings_pass():
    au.check_settings(settings())
    au.check_settings(settings(min_replicas=3, max_replicas=3, tolerance=0, scale_up_max_percent=0,
                               scale_down_stabilization=0))


@pytest.mark.parametrize('overrides, message', [
    ({'target': 0}, 'target must be a number above 0, got 0'),
    ({'target': -2.5}, 'target must be a number above 0, got -2.5'),
    ({'target': float('nan')}, 'target must be a number above 0, got nan'),
    ({'min_replicas': 5, 'max_replicas': 2}, 'min_replicas (5) must not be above max_replicas (2)'),
    ({'min_replicas': 0}, 'min_replicas must be 1 or more, got 0'),
    ({'tolerance': -0.1}, 'tolerance must be 0 or more'),
    ({'scale_up_max_step': 0}, 'scale_up_max_step must be 1 or more'),
    ({'scale_up_max_percent': -1}, 'scale_up_max_percent must be 0 or more'),
    ({'scale_down_stabilization': -1}, 'scale_down_stabilization must be 0 or more seconds'),
])
def test_bad_settings_are_refused_before_anything_happens(overrides, message):
    with pytest.raises(au.AutoscaleError, match=re.escape(message)) as error:
        au.check_settings(settings(**overrides))
    assert str(error.value).endswith('Nothing was changed.')


def test_the_history_label_stays_small():
    """One run a minute over a 10-minute window: eleven pairs at most, well under a kilobyte."""
    decisions = run([(60 * minute, 1.0 + (minute % 3) / 2.0) for minute in range(30)], current=4,
                    scale_down_stabilization=600, max_replicas=1000, scale_up_max_step=1000)
    text = au.write_history(decisions[-1]['history'])
    assert len(json.loads(text)) == 10 and len(text) < 1024
