"""Runs of Swarm jobs (swarm_service_wait), on data shaped like the Engine API's answers.

The service and tasks below follow `docker service inspect` and `GET /tasks` of a replicated job
with `--restart-condition none`: run 0 is the one created with the job, every update adds one.
"""

import copy

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils import swarm_services as ss
from swarm_clock import clock  # noqa: F401  # pylint: disable=unused-import  # a fixture


def job_service(iteration, completions=1, condition='none', mode='ReplicatedJob'):
    return {
        'ID': 'x1n3t0d5q2mbfy7bfv3vvn1k4',
        'Version': {'Index': 2817},
        'CreatedAt': '2026-11-30T09:12:01.402117118Z',
        'UpdatedAt': '2026-11-30T10:40:13.918330545Z',
        'Spec': {
            'Name': 'pretix-migrate',
            'Labels': {'boxoffice.component': 'pretix'},
            'TaskTemplate': {
                'ContainerSpec': {'Image': 'boxoffice/pretix:2025.1-4f3c2a', 'Args': ['migrate']},
                'RestartPolicy': {'Condition': condition, 'Delay': 5000000000, 'MaxAttempts': 0},
                'ForceUpdate': 1,
            },
            'Mode': ({'ReplicatedJob': {'MaxConcurrent': 1, 'TotalCompletions': completions}}
                     if mode == 'ReplicatedJob' else {'GlobalJob': {}}),
            'EndpointSpec': {'Mode': 'dnsrr'},
        },
        'Endpoint': {'Spec': {}},
        # The Engine API leaves out an Index of 0, the first run's.
        'JobStatus': {'JobIteration': {'Index': iteration} if iteration else {},
                      'LastExecution': '2026-11-30T10:40:13.918328Z'},
    }


def job_task(task_id, iteration, state, created, desired='complete', slot=1, err=None, exit_code=0):
    status = {
        'Timestamp': created.replace(':01.', ':31.'),
        'State': state,
        'Message': {'complete': 'finished', 'failed': 'started', 'running': 'started',
                    'pending': 'pending task scheduling', 'rejected': 'preparing'}.get(state, state),
        'ContainerStatus': {'ContainerID': 'c' * 64, 'PID': 0, 'ExitCode': exit_code},
        'PortStatus': {},
    }
    if err:
        status['Err'] = err
    return {
        'ID': task_id,
        'Version': {'Index': 2820},
        'CreatedAt': created,
        'UpdatedAt': created,
        'Labels': {},
        'ServiceID': 'x1n3t0d5q2mbfy7bfv3vvn1k4',
        'Slot': slot,
        'NodeID': 'rkl0l3ey1v5jrbuxbe4s6j1m5',
        'Status': status,
        'DesiredState': desired,
        'JobIteration': {'Index': iteration} if iteration else {},
    }


RUN_1_DONE = job_task('lk9ob2r5mlg8nj3v0a2m4q7c1', 1, 'complete', '2026-11-30T09:12:01.5Z', desired='shutdown')


def test_the_newest_run_is_the_one_of_the_services_iteration():
    run = ss.job_run(job_service(2), [RUN_1_DONE, job_task('t2runningtask0000000000001', 2, 'running',
                                                           '2026-11-30T10:40:14.1Z')])
    assert run == dict(iteration=2, state='running', completed=0, wanted=1, active=1,
                       task_id='t2runningtask0000000000001', errors=[])


def test_a_run_without_tasks_yet_is_pending_even_if_the_previous_run_completed():
    assert ss.job_run(job_service(2), [RUN_1_DONE])['state'] == 'pending'
    assert ss.job_run(job_service(2), [RUN_1_DONE])['task_id'] is None


def test_a_run_completes_when_its_completions_are_reached():
    tasks = [RUN_1_DONE,
             job_task('t2a', 2, 'complete', '2026-11-30T10:40:14.1Z', slot=1),
             job_task('t2b', 2, 'running', '2026-11-30T10:40:14.2Z', slot=2)]
    assert ss.job_run(job_service(2, completions=2), tasks)['state'] == 'running'
    tasks[2] = job_task('t2b', 2, 'complete', '2026-11-30T10:40:14.2Z', slot=2)
    run = ss.job_run(job_service(2, completions=2), tasks)
    assert (run['state'], run['completed'], run['wanted'], run['task_id']) == ('complete', 2, 2, 't2b')


def test_a_failed_task_fails_the_run_when_swarm_will_not_retry_it():
    failed = job_task('t2failedtask00000000000001', 2, 'failed', '2026-11-30T10:40:14.1Z', desired='shutdown',
                      err='task: non-zero exit (1)', exit_code=1)
    run = ss.job_run(job_service(2), [RUN_1_DONE, failed])
    assert run['state'] == 'failed'
    assert run['errors'] == ['task t2failedtask failed: task: non-zero exit (1)']


def test_a_failed_task_leaves_the_run_running_when_swarm_retries_it():
    failed = job_task('t2failed', 2, 'failed', '2026-11-30T10:40:14.1Z', desired='shutdown',
                      err='task: non-zero exit (1)', exit_code=1)
    assert ss.job_run(job_service(2, condition='on-failure'), [failed])['state'] == 'running'


def test_a_failure_of_the_previous_run_does_not_fail_the_new_one():
    old_failure = job_task('t1failed', 1, 'failed', '2026-11-30T09:12:01.5Z', desired='shutdown',
                           err='task: non-zero exit (1)', exit_code=1)
    run = ss.job_run(job_service(2), [old_failure, job_task('t2ok', 2, 'complete', '2026-11-30T10:40:14.1Z')])
    assert (run['state'], run['errors']) == ('complete', [])


def test_a_global_job_completes_when_every_task_of_the_run_completed():
    service = job_service(4, mode='GlobalJob')
    tasks = [job_task('g%d' % n, 4, 'complete' if n else 'running', '2026-11-30T10:40:14.%dZ' % n, slot=0)
             for n in range(3)]
    assert ss.job_run(service, tasks)['state'] == 'running'
    tasks[0]['Status']['State'] = 'complete'
    assert ss.job_run(service, tasks)['state'] == 'complete'


class JobApi:
    """Answers one (service, tasks) snapshot per inspect, the last one from then on."""

    def __init__(self, snapshots):
        self.snapshots = snapshots
        self.inspected = 0

    def inspect_service(self, service_id):
        self.current = self.snapshots[min(self.inspected, len(self.snapshots) - 1)]
        self.inspected += 1
        return copy.deepcopy(self.current[0])

    def tasks(self, filters):
        return copy.deepcopy(self.current[1])


class JobClient:
    def __init__(self, snapshots):
        self.api = JobApi(snapshots)


def test_wait_skips_the_run_read_before_the_change_until_a_newer_one_finished(clock):
    done = job_task('t2done', 2, 'complete', '2026-11-30T10:40:14.1Z')
    client = JobClient([
        (job_service(1), [RUN_1_DONE]),                                   # the change is not visible yet
        (job_service(2), [RUN_1_DONE]),                                   # new run, no task yet
        (job_service(2), [RUN_1_DONE, job_task('t2done', 2, 'running', '2026-11-30T10:40:14.1Z')]),
        (job_service(2), [RUN_1_DONE, done]),
    ])
    run, seconds = ss.wait_job_run(client, 'pretix-migrate', 60, previous_run=1)
    assert (run['iteration'], run['state'], run['task_id']) == (2, 'complete', 't2done')
    assert client.api.inspected == 4
    assert seconds == 3 * ss.POLL_SECONDS


def test_wait_without_previous_run_returns_the_newest_finished_run(clock):
    client = JobClient([(job_service(1), [RUN_1_DONE])])
    run, seconds = ss.wait_job_run(client, 'pretix-migrate', 60)
    assert (run['iteration'], run['state'], seconds) == (1, 'complete', 0)


def test_wait_returns_a_failed_run_at_once(clock):
    failed = job_task('t2failed', 2, 'failed', '2026-11-30T10:40:14.1Z', desired='shutdown',
                      err='task: non-zero exit (1)', exit_code=1)
    run, seconds = ss.wait_job_run(JobClient([(job_service(2), [RUN_1_DONE, failed])]), 'x', 60, previous_run=1)
    assert (run['state'], seconds) == ('failed', 0)


def test_wait_says_no_new_run_started_at_the_timeout(clock):
    client = JobClient([(job_service(1), [RUN_1_DONE])])
    with pytest.raises(ss.SwarmError) as error:
        ss.wait_job_run(client, 'pretix-migrate', 5, previous_run=1)
    assert clock.now == 5
    assert str(error.value) == (
        'job pretix-migrate did not finish within 5s: no run after run 1 started. Look at '
        '`docker service ps --no-trunc pretix-migrate` and `docker service logs pretix-migrate`.')


def test_the_first_run_is_number_0_which_the_engine_leaves_out():
    service = job_service(0)
    first = job_task('t0done', 0, 'complete', '2026-11-30T09:12:01.5Z')
    assert service['JobStatus']['JobIteration'] == {} and first['JobIteration'] == {}
    assert ss.job_run(service, [first])['iteration'] == 0
    assert ss.job_run(service, [first])['state'] == 'complete'
    # A task of a service that is no job belongs to no run.
    assert ss.task_job_iteration(dict(first, JobIteration=None)) is None
    assert ss.task_job_iteration({k: v for k, v in first.items() if k != 'JobIteration'}) is None


def test_wait_past_the_first_run_takes_the_second(clock):
    first = job_task('t0done', 0, 'complete', '2026-11-30T09:12:01.5Z', desired='shutdown')
    second = job_task('t1done', 1, 'complete', '2026-11-30T10:40:14.1Z')
    client = JobClient([(job_service(0), [first]), (job_service(1), [first, second])])
    run, dummy = ss.wait_job_run(client, 'pretix-migrate', 60, previous_run=0)
    assert (run['iteration'], run['task_id']) == (1, 't1done')


def test_wait_names_the_retried_failures_at_the_timeout(clock):
    failed = job_task('t2failedtask00000000000001', 2, 'failed', '2026-11-30T10:40:14.1Z', desired='shutdown',
                      err='task: non-zero exit (1)', exit_code=1)
    client = JobClient([(job_service(2, condition='on-failure'), [failed])])
    with pytest.raises(ss.SwarmError, match=r'run 2 is running with 0 of 1 tasks complete '
                                            r'\(task t2failedtask failed: task: non-zero exit \(1\)\)'):
        ss.wait_job_run(client, 'pretix-migrate', 3)
