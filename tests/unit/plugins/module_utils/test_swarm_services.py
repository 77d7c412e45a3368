"""Pure functions of the shared Swarm code, on data shaped like the Engine API's answers."""

import datetime

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils import swarm_services as ss
from swarm_clock import clock  # noqa: F401  # pylint: disable=unused-import  # a fixture

UTC = datetime.timezone.utc


@pytest.mark.parametrize('text, expected', [
    ('2026-11-26T15:55:47.154424297Z', datetime.datetime(2026, 11, 26, 15, 55, 47, 154424, UTC)),
    ('2026-11-26T15:55:47Z', datetime.datetime(2026, 11, 26, 15, 55, 47, 0, UTC)),
    ('2026-11-26T16:55:47.5+01:00', datetime.datetime(2026, 11, 26, 15, 55, 47, 500000, UTC)),
    ('0001-01-01T00:00:00Z', datetime.datetime(1, 1, 1, 0, 0, 0, 0, UTC)),
    ('', None),
    (None, None),
    ('yesterday', None),
])
def test_parse_timestamp(text, expected):
    assert ss.parse_timestamp(text) == expected


@pytest.mark.parametrize('mode, expected', [
    ({'Replicated': {'Replicas': 3}}, ('replicated', 3)),
    ({'Replicated': {}}, ('replicated', 1)),
    ({'Global': {}}, ('global', None)),
    ({'ReplicatedJob': {'MaxConcurrent': 1}}, ('replicated-job', None)),
    ({'GlobalJob': {}}, ('global-job', None)),
])
def test_service_mode(mode, expected):
    assert ss.service_mode({'Mode': mode}) == expected


def test_monitor_window_defaults_to_docker_default():
    assert ss.monitor_seconds({}) == ss.DEFAULT_MONITOR_SECONDS
    assert ss.monitor_seconds({'UpdateConfig': {'Monitor': 1500000000}}) == 1.5


def task(state='running', desired='running', node='n1'):
    return {'Status': {'State': state}, 'DesiredState': desired, 'NodeID': node}


def test_count_running_follows_the_cli_rule():
    tasks = [
        task(),                                # counts
        task(node='n2'),                       # node down: does not count
        task(state='starting'),                # not running yet
        task(desired='shutdown'),              # being removed (scale down, update)
        task(state='failed', desired='shutdown'),
        task(),                                # counts
    ]
    assert ss.count_running(tasks, {'n1'}) == 2


@pytest.mark.parametrize('status, before, fails', [
    (None, None, False),
    ({'State': 'completed'}, None, False),
    ({'State': 'updating'}, None, False),
    ({'State': 'paused', 'Message': 'task failed'}, None, True),
    ({'State': 'rollback_paused'}, None, True),
    ({'State': 'rollback_started'}, None, True),
    # A rollback that finished before our change is history, one that finished after is ours.
    ({'State': 'rollback_completed', 'StartedAt': 'a'}, {'State': 'rollback_completed', 'StartedAt': 'a'}, False),
    ({'State': 'rollback_completed', 'StartedAt': 'b'}, {'State': 'completed', 'StartedAt': 'a'}, True),
])
def test_update_status_problem(status, before, fails):
    assert bool(ss.update_status_problem(status, before)) is fails


@pytest.mark.parametrize('status, expected', [
    ({'State': 'failed', 'Err': 'task: non-zero exit (3)', 'Message': 'started'},
     'task 0123456789ab failed: task: non-zero exit (3)'),
    ({'State': 'rejected', 'Message': 'no suitable node'}, 'task 0123456789ab rejected: no suitable node'),
    ({'State': 'failed'}, 'task 0123456789ab failed: no error message'),
])
def test_describe_failed_task_gives_short_id_state_and_error(status, expected):
    assert ss.describe_failed_task({'ID': '0123456789abcdefghijklmnopq', 'Status': status}) == expected


def test_newest_task_errors_names_the_newest_failures_first():
    tasks = [
        {'ID': 'a' * 25, 'UpdatedAt': '2026-11-30T07:00:00Z', 'Status': {'State': 'rejected', 'Err': 'old error'}},
        {'ID': 'b' * 25, 'UpdatedAt': '2026-11-30T07:10:00Z', 'Status': {'State': 'rejected', 'Err': 'no such image'}},
        {'ID': 'c' * 25, 'UpdatedAt': '2026-11-30T07:11:00Z', 'Status': {'State': 'running'}},
    ]
    text = ss.newest_task_errors(tasks, 'pgpool', count=1)
    assert text == 'Newest task errors: task bbbbbbbbbbbb rejected: no such image.'


def test_newest_task_errors_without_failures_points_at_docker_service_ps():
    assert 'docker service ps --no-trunc web' in ss.newest_task_errors([{'Status': {'State': 'running'}}], 'web')


class FakeApi:
    """The Engine API calls wait_converged makes, answering one UpdateStatus per inspect."""

    def __init__(self, update_states, tasks):
        self.update_states = list(update_states)
        self.task_list = tasks
        self.inspected = 0

    def inspect_service(self, service_id):
        state = self.update_states[min(self.inspected, len(self.update_states) - 1)]
        self.inspected += 1
        service = {'ID': service_id, 'Spec': {'Name': 'pgpool', 'UpdateConfig': {'Monitor': 10 ** 9}}}
        if state:
            service['UpdateStatus'] = {'State': state, 'Message': state.replace('_', ' ')}
        return service

    def tasks(self, filters):
        return self.task_list

    def nodes(self):
        return [{'ID': 'n1', 'Status': {'State': 'ready'}}]


class FakeClient:
    def __init__(self, update_states, tasks):
        self.api = FakeApi(update_states, tasks)


ROLLED_BACK_TASKS = [
    {'ID': 'old' * 9, 'DesiredState': 'running', 'NodeID': 'n1', 'Status': {'State': 'running'}},
    {'ID': 'new' * 9, 'DesiredState': 'shutdown', 'NodeID': 'n1', 'UpdatedAt': '2026-11-30T07:00:00Z',
     'Status': {'State': 'failed', 'Err': 'task: non-zero exit (3)'}},
]


@pytest.mark.parametrize('final', ['rollback_completed', 'rollback_paused'])
def test_wait_converged_reports_a_rollback_once_swarm_has_finished_it(clock, final):
    client = FakeClient(['updating', 'rollback_started', 'rollback_started', 'rollback_started', final],
                        ROLLED_BACK_TASKS)

    with pytest.raises(ss.SwarmError) as error:
        ss.wait_converged(client, 'svc', 1, 60, require_update_completed=True)

    assert client.api.inspected == 5
    assert str(error.value) == (
        'service pgpool did not converge: update status is %s: %s. Newest task errors: task newnewnewnew '
        'failed: task: non-zero exit (3).' % (final, final.replace('_', ' ')))


def test_wait_converged_says_so_when_the_rollback_outlasts_the_timeout(clock):
    client = FakeClient(['rollback_started'], ROLLED_BACK_TASKS)

    with pytest.raises(ss.SwarmError) as error:
        ss.wait_converged(client, 'svc', 1, 3, require_update_completed=True)

    assert clock.now == 3
    assert str(error.value).startswith(
        'service pgpool did not converge within 3s: Swarm was still rolling it back (update status is '
        'rollback_started: rollback started). Newest task errors: task newnewnewnew failed: ')


def test_wait_converged_fails_at_once_on_failing_new_tasks_also_during_a_rollback(clock):
    client = FakeClient(['rollback_started'], ROLLED_BACK_TASKS)

    with pytest.raises(ss.SwarmError) as error:
        ss.wait_converged(client, 'svc', 1, 60, known_task_ids={'old' * 9})

    assert clock.now == 0
    assert str(error.value) == ('service pgpool did not converge: its new tasks fail '
                                '(task newnewnewnew failed: task: non-zero exit (3))')


def test_wait_converged_ignores_a_rollback_completed_before_the_change(clock):
    stale = {'State': 'rollback_completed', 'Message': 'rollback completed'}
    client = FakeClient(['rollback_completed'], ROLLED_BACK_TASKS)

    assert ss.wait_converged(client, 'svc', 1, 60, update_status_before=stale) == (1, 1.0)


def test_desired_tasks_of_a_global_service_are_the_wanted_tasks_on_ready_nodes():
    service = {'Spec': {'Mode': {'Global': {}}}}
    tasks = [task(), task(node='n2'), task(state='starting'), task(desired='shutdown')]
    assert ss.desired_tasks(service, tasks, {'n1'}) == 2
    assert ss.desired_tasks({'Spec': {'Mode': {'Replicated': {'Replicas': 4}}}}, tasks, {'n1'}) == 4
