"""Every molecule scenario under molecule/ runs its full test sequence against real containers."""

import os
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = sorted(
    entry for entry in os.listdir(os.path.join(REPO_ROOT, 'molecule'))
    if os.path.isfile(os.path.join(REPO_ROOT, 'molecule', entry, 'molecule.yml')))


@pytest.mark.slow
@pytest.mark.parametrize('scenario', SCENARIOS)
def test_molecule_scenario(scenario):
    venv_bin = os.path.join(REPO_ROOT, '.venv', 'bin')
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ['PATH'], PY_COLORS='0',
               ANSIBLE_FORCE_COLOR='0')
    result = subprocess.run([os.path.join(venv_bin, 'molecule'), 'test', '-s', scenario],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=3600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
