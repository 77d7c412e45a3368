"""Finding logic of swarm_service_heal, on data shaped like the Engine API's answers."""

import datetime

from ansible_collections.boxoffice.pretix.plugins.modules import swarm_service_heal as heal

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.timezone.utc)


def stamp(seconds_ago):
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def service(replicas=2, condition='any', updated_ago=3600, labels=None, name='app_web', update=None):
    svc = {'Spec': {'Name': name, 'Labels': labels or {}, 'Mode': {'Replicated': {'Replicas': replicas}},
                    'TaskTemplate': {'RestartPolicy': {'Condition': condition}}},
           'UpdatedAt': stamp(updated_ago)}
    if update:
        svc['UpdateStatus'] = update
    return svc


def task(state='running', desired='running', ago=10, slot=1, node='n1'):
    return {'ID': 'task%d%s%d' % (slot, state, ago), 'Slot': slot, 'NodeID': node, 'DesiredState': desired,
            'CreatedAt': stamp(ago), 'Status': {'State': state, 'Timestamp': stamp(ago), 'Err': 'boom'}}


def findings(svc, tasks, recent=300, threshold=3):
    return heal.inspect_health(svc, tasks, {'n1'}, recent, threshold, NOW)


def test_healthy_service_has_no_findings():
    assert findings(service(), [task(slot=1), task(slot=2)]) == (2, 2, [])


def test_missing_replica_is_under_replicated():
    desired, running, found = findings(service(), [task(slot=1)])
    assert (desired, running) == (2, 1)
    assert [f['kind'] for f in found] == ['under_replicated']


def test_replica_still_starting_is_not_missing():
    desired, running, found = findings(service(), [task(slot=1), task('starting', ago=30, slot=2)])
    assert (desired, running, found) == (2, 1, [])


def test_replica_stuck_starting_beyond_the_window_is_reported():
    found = findings(service(), [task(slot=1), task('pending', ago=900, slot=2)])[2]
    assert [f['kind'] for f in found] == ['under_replicated', 'stuck_starting']
    assert '1 stuck starting' in found[0]['detail'] and 'pending since' in found[1]['detail']


def test_failures_inside_the_window_only():
    tasks = [task(slot=1), task(slot=2), task('failed', 'shutdown', ago=60, slot=2),
             task('rejected', 'shutdown', ago=4000, slot=2)]
    found = findings(service(), tasks)[2]
    assert [f['kind'] for f in found] == ['failed_tasks']
    assert found[0]['count'] == 1


def test_restart_loop_needs_more_failures_than_the_threshold():
    failures = [task('failed', 'shutdown', ago=20 * i, slot=1) for i in range(1, 4)]
    at_threshold = findings(service(replicas=1), [task()] + failures, threshold=3)[2]
    over = findings(service(replicas=1), [task()] + failures, threshold=2)[2]
    assert 'restart_loop' not in [f['kind'] for f in at_threshold]
    assert 'restart_loop' in [f['kind'] for f in over]


def test_failures_before_the_last_update_are_ignored():
    tasks = [task(slot=1), task('failed', 'shutdown', ago=60, slot=1)]
    assert findings(service(replicas=1, updated_ago=30), tasks)[2] == []


def test_completed_one_shot_satisfies_its_slot_unless_restart_any():
    tasks = [task('complete', 'shutdown', ago=100, slot=1)]
    assert findings(service(replicas=1, condition='none'), tasks)[2] == []
    assert findings(service(replicas=1, condition='any'), tasks)[2][0]['kind'] == 'under_replicated'


def test_paused_update_is_a_finding():
    svc = service(update={'State': 'paused', 'Message': 'update paused due to failure'})
    found = findings(svc, [task(slot=1), task(slot=2)])[2]
    assert found == [{'kind': 'update_paused', 'detail': 'update paused due to failure'}]


def test_select_by_stack_label_or_prefix_and_labels():
    services = [service(name='shop_web'), service(name='web', labels={'com.docker.stack.namespace': 'shop'}),
                service(name='other_web'), service(name='shop_db', labels={'tier': 'db'})]
    names = [s['Spec']['Name'] for s in heal.select_services(services, 'shop', None)]
    assert names == ['shop_db', 'shop_web', 'web']
    assert [s['Spec']['Name'] for s in heal.select_services(services, None, {'tier': 'db'})] == ['shop_db']
    assert len(heal.select_services(services, None, None)) == 4
