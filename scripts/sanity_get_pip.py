"""Offline stand-in for the get-pip.py that ansible-test downloads to bootstrap its venvs.

ansible-test fetches get-pip from ci-files.testing.ansible.com, which is not reachable here
(only PyPI is, through a proxy). It runs the script inside a fresh `venv --without-pip` with
pip-install arguments such as `pip==24.2 --no-setuptools --no-wheel`. This does the same with
what Python ships: ensurepip installs the bundled pip, which then installs the requested pins
from PyPI. scripts/sanity.sh copies it to where ansible-test looks for its cached download.
"""

import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = ('--no-setuptools', '--no-wheel')

# ensurepip blanks pip's configuration in os.environ; the real install needs it (certificates).
environment = dict(os.environ)
ensurepip.bootstrap()
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install'] + args, env=environment))
