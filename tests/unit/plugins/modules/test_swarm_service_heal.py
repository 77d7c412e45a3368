"""Finding logic of swarm_service_heal, on data shaped like the Engine API's answers."""

import datetime

import pytest

from ansible_collections.boxoffice.pretix.plugins.modules import swarm_service_heal as heal

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.timezone.utc)


def stamp(seconds_ago):
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def service(replicas=2, condition='any', created_ago=3600, labels=None, name='app_web', update=None,
            update_started_ago=None, mode=None):
    svc = {'Spec': {'Name': name, 'Labels': labels or {}, 'Mode': mode or {'Replicated': {'Replicas': replicas}},
                    'TaskTemplate': {'RestartPolicy': {'Condition': condition}}},
           'CreatedAt': stamp(created_ago), 'UpdatedAt': stamp(created_ago)}
    if update or update_started_ago is not None:
        svc['UpdateStatus'] = dict({'State': 'completed'}, **(update or {}))
        if update_started_ago is not None:
            svc['UpdateStatus']['StartedAt'] = stamp(update_started_ago)
    return svc


def task(state='running', desired='running', ago=10, slot=1, node='n1', created_ago=None, updated_ago=None):
    """A task whose status last changed `ago` seconds ago (failed, or went running, then)."""
    created_ago = ago + 1 if created_ago is None else created_ago
    return {'ID': 'task%d%s%d' % (slot, state, ago), 'Slot': slot, 'NodeID': node, 'DesiredState': desired,
            'CreatedAt': stamp(created_ago), 'UpdatedAt': stamp(ago if updated_ago is None else updated_ago),
            'Status': {'State': state, 'Timestamp': stamp(ago), 'Err': 'boom'}}


def failed(ago, slot=1, node='n1'):
    return task('failed', 'shutdown', ago=ago, slot=slot, node=node)


def findings(svc, tasks, recent=300, threshold=3):
    return heal.inspect_health(svc, tasks, {'n1', 'n2'}, recent, threshold, NOW)


def kinds(found):
    return [f['kind'] for f in found]


def verdict(svc, tasks, recent=300, threshold=3):
    found = findings(svc, tasks, recent, threshold)[2]
    return heal.plan(found, (svc.get('UpdateStatus') or {}).get('State'), recent)[0]


def test_healthy_service_has_no_findings():
    assert findings(service(), [task(slot=1), task(slot=2)]) == (2, 2, [])


def test_missing_replica_is_under_replicated():
    desired, running, found = findings(service(), [task(slot=1)])
    assert (desired, running) == (2, 1)
    assert kinds(found) == ['under_replicated']


def test_replica_still_starting_is_not_missing():
    desired, running, found = findings(service(), [task(slot=1), task('starting', ago=30, slot=2)])
    assert (desired, running, found) == (2, 1, [])


def test_replica_stuck_starting_beyond_the_window_is_reported():
    found = findings(service(), [task(slot=1), task('pending', ago=900, slot=2)])[2]
    assert kinds(found) == ['under_replicated', 'stuck_starting']
    assert '1 stuck starting' in found[0]['detail'] and 'pending since' in found[1]['detail']


def test_failures_inside_the_window_only():
    tasks = [task(slot=1), task(slot=2), failed(60, slot=2), task('rejected', 'shutdown', ago=4000, slot=2)]
    found = findings(service(), tasks)[2]
    assert kinds(found) == ['failed_tasks']
    assert found[0]['count'] == 1


def test_failures_before_the_last_update_started_are_not_failed_tasks():
    """A service healed a moment ago is not redeployed again for what caused the heal."""
    tasks = [task(ago=20, slot=1), failed(60, slot=1)]
    assert findings(service(replicas=1, update_started_ago=30), tasks)[2] == []
    # A rollback keeps the StartedAt of the update it undoes: that update's failures still count.
    rolled_back = service(replicas=1, update={'State': 'rollback_completed'}, update_started_ago=90)
    assert kinds(findings(rolled_back, tasks)[2]) == ['failed_tasks']


def test_restart_loop_needs_more_failures_than_the_threshold():
    failures = [failed(20 * i) for i in range(1, 4)]
    at_threshold = findings(service(replicas=1), [task('starting', ago=5)] + failures, threshold=3)[2]
    over = findings(service(replicas=1), [task('starting', ago=5)] + failures, threshold=2)[2]
    assert 'restart_loop' not in kinds(at_threshold)
    assert 'restart_loop' in kinds(over)


def test_crash_loop_right_after_a_redeploy_is_still_a_restart_loop():
    """The incident: the module's own redeploy made every earlier failure 'old'; the loop goes on."""
    failures = [failed(ago) for ago in (40, 30, 20, 12)]
    tasks = [task(ago=2, slot=1)] + failures     # up for 2 s; the loop failed every ~9 s
    found = findings(service(replicas=1, update_started_ago=5), tasks)[2]
    assert kinds(found) == ['restart_loop']
    loop = found[0]
    assert loop['count'] == 4 and loop['settle_seconds'] == pytest.approx(18.7, abs=0.1)
    assert 'slot 1: 4 failures, 9.3s apart, a task up 2.0s of the 18.7s that end the loop' in loop['detail']
    assert verdict(service(replicas=1, update_started_ago=5), tasks) == 'redeploy'


def test_restart_loop_is_over_once_a_task_outlives_it():
    """A service healed from a loop and running fine stays green."""
    failures = [failed(ago) for ago in (70, 60, 50, 42)]
    tasks = [task(ago=25, slot=1)] + failures    # up 25 s, more than twice the ~9 s period
    assert findings(service(replicas=1, update_started_ago=30), tasks)[2] == []


def test_long_lived_first_failure_does_not_stretch_the_loop():
    """The loop's period is its time between failures, not how long the first task had run."""
    first = task('failed', 'shutdown', ago=60, created_ago=86400)
    failures = [first] + [failed(ago) for ago in (55, 50, 45)]
    up_long_enough = findings(service(replicas=1, update_started_ago=35), [task(ago=20)] + failures)[2]
    assert up_long_enough == []


def test_slot_without_a_running_task_is_still_looping():
    failures = [failed(ago) for ago in (200, 150, 100, 50)]
    found = findings(service(replicas=1), [task('ready', 'ready', ago=1)] + failures)[2]
    loop = [f for f in found if f['kind'] == 'restart_loop'][0]
    assert 'no task running since' in loop['detail']
    assert loop['settle_seconds'] == 100.0


def test_settle_time_is_at_most_the_window():
    """Failures leave the window after `recent` seconds, so no loop needs a longer run to end."""
    failures = [failed(290, slot=1), failed(40, slot=1)] + [failed(ago, slot=2) for ago in (100, 90, 80)]
    tasks = [task('starting', ago=1, slot=1), task(ago=50, slot=2)] + failures
    loop = findings(service(), tasks)[2][-1]
    assert loop['kind'] == 'restart_loop' and loop['settle_seconds'] == 300.0
    assert 'slot 1: 2 failures, 250.0s apart, no task running since' in loop['detail']
    assert 'slot 2' not in loop['detail']


def test_one_failure_in_each_of_many_slots_is_not_a_loop():
    """A node restart kills every replica once: failures, but nothing loops."""
    tasks = []
    for slot in range(1, 6):
        tasks += [task(ago=30, slot=slot), failed(40, slot=slot)]
    found = findings(service(replicas=5), tasks)[2]
    assert kinds(found) == ['failed_tasks']
    assert found[0]['count'] == 5


def test_scaled_down_slot_ends_its_loop():
    failures = [failed(ago, slot=2) for ago in (50, 40, 30, 20)]
    retired = task('shutdown', 'shutdown', ago=10, slot=2)
    found = findings(service(replicas=1, update_started_ago=5), [task(ago=100, slot=1), retired] + failures)[2]
    assert found == []


def test_global_service_loops_per_node():
    svc = service(mode={'Global': {}})
    tasks = [task(ago=100, slot=0, node='n1'), task('starting', ago=1, slot=0, node='n2')]
    tasks += [failed(ago, slot=0, node='n2') for ago in (40, 30, 20, 10)]
    for item in tasks:
        del item['Slot']
    found = findings(svc, tasks)[2]
    assert kinds(found) == ['failed_tasks', 'restart_loop']
    assert 'node n2: 4 failures' in found[1]['detail']


def test_completed_one_shot_satisfies_its_slot_unless_restart_any():
    tasks = [task('complete', 'shutdown', ago=100, slot=1)]
    assert findings(service(replicas=1, condition='none'), tasks)[2] == []
    assert findings(service(replicas=1, condition='any'), tasks)[2][0]['kind'] == 'under_replicated'


def test_paused_update_is_a_finding():
    svc = service(update={'State': 'paused', 'Message': 'update paused due to failure'})
    found = findings(svc, [task(slot=1), task(slot=2)])[2]
    assert found == [{'kind': 'update_paused', 'detail': 'update paused due to failure'}]
    assert heal.plan(found, 'paused', 300)[0] == 'redeploy'


def test_two_tasks_swarm_wants_in_one_slot_are_over_replicated_and_redeployed():
    """A rolling force update replaces them: Swarm's updater keeps one task per slot."""
    tasks = [task(slot=1), task(ago=20, slot=1), task(slot=2), task(ago=30, slot=2)]
    desired, running, found = findings(service(), tasks)
    assert (desired, running) == (2, 4)
    assert found == [{'kind': 'over_replicated', 'count': 2, 'told_to_stop': 0,
                      'detail': '4 running for 2 desired; slot 1: 2 tasks running; slot 2: 2 tasks running'}]
    assert heal.plan(found, 'completed', 300) == ('redeploy', None)


def test_more_running_slots_than_replicas_are_over_replicated():
    tasks = [task(slot=1), task(slot=2), task(slot=3)]
    found = findings(service(), tasks)[2]
    assert kinds(found) == ['over_replicated'] and found[0]['count'] == 1


def test_global_service_with_two_tasks_on_a_node_is_over_replicated():
    tasks = [task(node='n1'), task(ago=50, node='n1'), task(node='n2')]
    for item in tasks:
        del item['Slot']
    found = findings(service(mode={'Global': {}}), tasks)[2]
    assert kinds(found) == ['over_replicated']
    assert 'node n1: 2 tasks running' in found[0]['detail']


def test_tasks_told_to_stop_count_once_stuck_longer_than_the_window():
    current = [task(slot=1), task(slot=2)]
    stopping = [task('running', 'shutdown', ago=400, slot=1, updated_ago=20),
                task('running', 'shutdown', ago=400, slot=2, updated_ago=20)]
    assert findings(service(), current + stopping)[2] == []

    stuck = [task('running', 'shutdown', ago=4000, slot=1, updated_ago=600),
             task('running', 'shutdown', ago=4000, slot=2, updated_ago=600)]
    desired, running, found = findings(service(), current + stuck)
    assert (desired, running) == (2, 2)
    assert kinds(found) == ['over_replicated']
    assert found[0]['count'] == 2 and found[0]['told_to_stop'] == 2
    assert found[0]['detail'].startswith('4 running for 2 desired; task task1running on node n1 told to stop at ')
    # No redeploy stops a container already told to stop: failing, nothing done.
    decision, error = heal.plan(found, 'completed', 300)
    assert decision == 'failed' and 'the Docker engine on their node must' in error
    # Next to another finding it is redeployed, and the wait then needs the stuck tasks gone.
    found = findings(service(), current + stuck + [failed(30, slot=2)])[2]
    assert heal.plan(found, 'completed', 300)[0] == 'redeploy'


@pytest.mark.parametrize('state', ['updating', 'rollback_started'])
def test_rollout_with_failing_tasks_is_failed(state):
    svc = service(replicas=1, update={'State': state}, update_started_ago=60)
    tasks = [task('starting', ago=2), failed(20)]
    found = findings(svc, tasks)[2]
    assert kinds(found) == ['failed_tasks']
    decision, error = heal.plan(found, state, 300)
    assert decision == 'failed'
    assert 'keep failing while its %s is under way' % ('rollback' if state == 'rollback_started'
                                                       else 'rolling update') in error


def test_rollout_that_began_during_a_crash_loop_is_failed():
    """The incident: pg-0 restart-looping, an update under way, 'updating (none); under_replicated'."""
    svc = service(replicas=1, update={'State': 'updating'}, update_started_ago=3)
    tasks = [task('ready', 'ready', ago=1)] + [failed(ago) for ago in (50, 40, 30, 20, 10)]
    found = findings(svc, tasks)[2]
    assert 'restart_loop' in kinds(found)
    assert heal.plan(found, 'updating', 300)[0] == 'failed'


def test_normal_rollout_is_left_alone():
    """Stop-first replaces a task: one replica missing for a moment, an extra one with start-first."""
    svc = service(update={'State': 'updating'}, update_started_ago=5)
    stop_first = [task(slot=1), task('shutdown', 'shutdown', ago=3, slot=2)]
    start_first = [task(slot=1), task(slot=2), task(ago=1, slot=2)]
    for tasks in (stop_first, start_first):
        found = findings(svc, tasks)[2]
        assert found and heal.plan(found, 'updating', 300) == ('updating', None)


def test_hint_by_label_names_the_service():
    hints = {'postgres': 'run data.yml -e postgres_repmgr_reclone=<name> (see docker service logs <name>)'}
    member = service(name='pg-0', labels={'boxoffice.component': 'postgres'})
    assert heal.hint_for(member, hints, 'boxoffice.component') == \
        'run data.yml -e postgres_repmgr_reclone=pg-0 (see docker service logs pg-0)'
    assert heal.hint_for(service(labels={'boxoffice.component': 'pretix'}), hints, 'boxoffice.component') is None
    assert heal.hint_for(service(), hints, 'boxoffice.component') is None
    assert heal.hint_for(member, hints, 'other.label') is None


def test_running_stateful_member_is_never_redeployed_for_past_failures():
    params = {'hint_label': 'boxoffice.component', 'stateful': ['postgres']}
    member = service(name='pg-0', labels={'boxoffice.component': 'postgres'})
    assert heal.is_stateful(member, params)
    assert not heal.is_stateful(service(labels={'boxoffice.component': 'pretix'}), params)
    failed = [{'kind': 'failed_tasks', 'count': 2, 'detail': 'x'}]
    assert heal.stateful_verdict(failed, True) == ('healthy', None)
    assert heal.stateful_verdict(failed + [{'kind': 'under_replicated', 'detail': 'x'}], False) == ('redeploy', None)
    looping = failed + [{'kind': 'restart_loop', 'count': 5, 'detail': '5 failures'}]
    for all_running in (True, False):
        verdict, error = heal.stateful_verdict(looping, all_running)
        assert verdict == 'failed' and '5 failures' in error


def test_failure_message_names_each_failing_service_and_what_to_do():
    results = [
        dict(name='a', action='redeploy', result='failed', error='did not converge'),
        dict(name='pg-0', action='none', result='failed', error='its tasks keep failing', hint='reclone pg-0.'),
        dict(name='b', action='redeploy', result='healed'),
    ]
    assert heal.failure_message(results) == (
        'Still failing after a redeploy: a. Failing, not redeployed: pg-0 (its tasks keep failing). '
        'What to do about pg-0: reclone pg-0. '
        'See services[].error and `docker service ps --no-trunc <service>`.')


def test_select_by_stack_label_or_prefix_and_labels():
    services = [service(name='shop_web'), service(name='web', labels={'com.docker.stack.namespace': 'shop'}),
                service(name='other_web'), service(name='shop_db', labels={'tier': 'db'})]
    names = [s['Spec']['Name'] for s in heal.select_services(services, 'shop', None)]
    assert names == ['shop_db', 'shop_web', 'web']
    assert [s['Spec']['Name'] for s in heal.select_services(services, None, {'tier': 'db'})] == ['shop_db']
    assert len(heal.select_services(services, None, None)) == 4
