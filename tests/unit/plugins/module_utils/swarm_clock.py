"""The fake clock fixture of the wait-loop tests of module_utils/swarm_services.py.

Not a conftest.py: the tests import `conftest` by name, and a second one would hide the root's.
"""

import pytest

from ansible_collections.boxoffice.pretix.plugins.module_utils import swarm_services as ss


class FakeClock:
    """time.monotonic and time.sleep for the wait loops: sleeping moves the clock on."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(ss.time, 'monotonic', fake.monotonic)
    monkeypatch.setattr(ss.time, 'sleep', fake.sleep)
    return fake
