"""Django settings of the celery worker: pretix's own, with its database connections kept.

Celery's Django fix-up closes the database connection before and after every task unless
CELERY_DB_REUSE_MAX is set, so each task (two per API order: notifications, webhooks) opened
a new connection. Through pgpool that is a SCRAM handshake on both ends: about 25 ms of CPU
per connection, measured, the largest part of what the HA stack cost per order beyond a bare
pretix. Kept connections follow the same rules as in pretix's web requests:
each task starts with Django's close_old_connections, which drops a connection older than
CONN_MAX_AGE or broken (a pgpool restart or a PostgreSQL failover), and CONN_HEALTH_CHECKS
makes the first query of a task check a reused connection before trusting it.

The worker also proves it is alive: its consumer's heartbeat (celery's worker-heartbeat event,
every 2 s through the broker) rewrites a file that the image's healthcheck reads. A worker whose
consumer died while the process lives on (a broker error celery does not treat as a lost
connection, e.g. NOREPLICAS from a Redis master cut off from its replicas) stops beating, turns
unhealthy and is restarted by Swarm, instead of leaving every checkout waiting for it.
"""
import pathlib

from celery.signals import heartbeat_sent, task_prerun
from django.db import close_old_connections

from pretix.settings import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import

# The fix-up then closes only every CELERY_DB_REUSE_MAX tasks; CONN_MAX_AGE bounds the age.
CELERY_DB_REUSE_MAX = 1000


def _drop_old_connections(**_kwargs):
    close_old_connections()


task_prerun.connect(_drop_old_connections, weak=False)


# Read by the image's healthcheck (healthcheck.py), like the cron loop's heartbeat file.
HEARTBEAT_FILE = "/tmp/pretix-worker-heartbeat"


def _beat(**_kwargs):
    pathlib.Path(HEARTBEAT_FILE).touch()


heartbeat_sent.connect(_beat, weak=False)
