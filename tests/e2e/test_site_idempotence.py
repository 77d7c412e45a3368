"""A second run of site.yml on the deployed stack changes nothing (runs last among the e2e tests:
pytest collects this directory in file-name order and the operations tests leave the stack as
they found it)."""

import re

from conftest import run_playbook


def test_second_site_run_changes_nothing():
    rc, output = run_playbook('site.yml', timeout=3600)

    assert rc == 0, output[-8000:]
    recap = re.findall(r'^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)',
                       output, re.MULTILINE)
    assert recap, output[-4000:]
    changed = {host: int(count) for host, count, _, _ in recap if int(count)}
    assert not changed, 'changed tasks on %s:\n%s' % (changed, '\n'.join(changed_tasks(output)))


def changed_tasks(output):
    task = None
    for line in output.splitlines():
        if line.startswith('TASK ['):
            task = line.rstrip(' *')
        elif line.startswith('changed:'):
            yield '%s %s' % (task, line)
