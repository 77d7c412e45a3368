"""The pretix worker replaces a pool process that has grown past its memory bound, between tasks.

Under the web checkout load a pool process grew by about 1 MB a second until the kernel killed
it at the task's memory limit, in the middle of an order. The worker therefore runs Celery with
--max-memory-per-child. Here the deployed pretix image runs in worker mode against a Redis of its
own (the deployed Redis image, on a network of the test's own), and real Celery tasks go through
it: with a bound below any process's size every task's process is replaced and the next task
still runs; with the image's default bound, the same tasks leave the pool processes in place.
"""
import pytest

from conftest import deployed_image, wait_for

# Celery's own task: it needs neither pretix's database nor its network.
SEND_TASKS = '''
import os
from celery import Celery
app = Celery(broker=os.environ["PRETIX_CELERY_BROKER"], backend=os.environ["PRETIX_CELERY_BACKEND"])
for i in range(3):
    print("result", app.send_task("celery.accumulate", args=(i,), queue="default").get(timeout=60))
'''
RECYCLED = 'child process exiting after exceeding memory limit'
DEFAULT_BOUND_KIB = 400 * 1024  # pretix_worker_max_memory_per_child's default, 400M


@pytest.fixture
def run_worker(docker_client, unique_name):
    """Start a worker-mode container of the deployed pretix image with `environment` next to a
    Redis; returns the container once Celery is ready. Everything is removed at teardown."""
    network = docker_client.networks.create(unique_name('net'))
    containers = []

    def run(environment):
        redis = unique_name('redis')  # Docker's DNS on the network resolves container names
        containers.append(docker_client.containers.run(
            deployed_image(docker_client, 'redis-0'), ['--save', '', '--protected-mode', 'no'],
            entrypoint='redis-server', name=redis, network=network.name, detach=True))
        worker = docker_client.containers.run(
            deployed_image(docker_client, 'pretix-web'), ['worker'], name=unique_name('worker'),
            network=network.name, detach=True, environment=dict(
                environment, PRETIX_CELERY_BROKER='redis://%s:6379/1' % redis,
                PRETIX_CELERY_BACKEND='redis://%s:6379/2' % redis,
                PRETIX_REDIS_LOCATION='redis://%s:6379/0' % redis))
        containers.append(worker)
        wait_for(lambda: ' ready.' in worker.logs().decode(), timeout=120,
                 message='the Celery worker to be ready')
        return worker

    yield run
    for container in containers:
        container.remove(force=True)
    network.remove()


def celery_processes(worker):
    """PID -> (parent PID, command line) of the Celery processes (the main process and its pool)."""
    top = worker.top(ps_args='-o pid,ppid,args')
    return {pid: (parent, command) for pid, parent, command in top['Processes'] if 'celery' in command}


def main_process(processes):
    """The Celery process whose parent is not Celery. PIDs wrap, so the lowest is not it."""
    [main] = [pid for pid, (parent, _) in processes.items() if parent not in processes]
    return main


def send_three_tasks(worker):
    exit_code, output = worker.exec_run(['/opt/pretix/venv/bin/python', '-c', SEND_TASKS])
    output = output.decode()
    assert exit_code == 0, output
    assert output.split() == ['result', '[0]', 'result', '[1]', 'result', '[2]'], output


def test_a_process_past_the_bound_is_replaced_and_tasks_go_on(run_worker):
    worker = run_worker({'PRETIX_WORKER_MAX_MEMORY_PER_CHILD': '1'})
    before = celery_processes(worker)
    send_three_tasks(worker)
    wait_for(lambda: worker.logs().decode().count(RECYCLED) == 3, timeout=60,
             message='each of the 3 tasks to end with its pool process replaced')
    def full_pool():
        processes = celery_processes(worker)
        return len(processes) == 3 and processes

    # The replaced processes are started again: the main process and a full pool of 2.
    after = wait_for(full_pool, timeout=60, message='the pool to be full again')
    assert main_process(after) == main_process(before), (before, after)
    # Each task ran in a process that then exited, so one that was there before has gone.
    assert set(before) - set(after), (before, after)


def test_the_default_bound_leaves_a_small_process_in_place(run_worker):
    worker = run_worker({})
    before = celery_processes(worker)
    assert all('--max-memory-per-child %d' % DEFAULT_BOUND_KIB in command
               for _, command in before.values()), before
    send_three_tasks(worker)
    assert RECYCLED not in worker.logs().decode()
    assert celery_processes(worker) == before
