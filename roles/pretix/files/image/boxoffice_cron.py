"""pretix's periodic tasks (`runperiodic`) every PRETIX_CRON_INTERVAL seconds, in one process.

A new `python -m pretix runperiodic` process for every run cost 7.6 CPU-s and 15 s of wall
time, measured in the cron container, nearly all of it spent starting pretix. The same command
called again in a running process took 0.08 to 0.13 CPU-s. Started afresh even every 300 s, the
runs took a few per cent of a 2-core machine's CPU, in bursts that fell into the middle of sales.

Each run that succeeds writes the time to the heartbeat file that the image's healthcheck reads.
A run that fails is logged and tried again at the next period; failing for good, it lets the
heartbeat age until Swarm replaces the task. Database connections are closed after each run, so
a failover or a pgpool restart in between cannot leave a broken one behind, and no pgpool child
is held for a connection that stays idle all period long.
"""
import logging
import os
import time

import django

HEARTBEAT = "/tmp/pretix-cron-heartbeat"


def main():
    django.setup()
    from django.core.management import call_command  # pylint: disable=import-outside-toplevel
    from django.db import connections  # pylint: disable=import-outside-toplevel

    interval = int(os.environ["PRETIX_CRON_INTERVAL"])
    log = logging.getLogger("boxoffice.cron")
    while True:
        try:
            call_command("runperiodic")
        except Exception:  # pylint: disable=broad-exception-caught
            log.exception("pretix runperiodic failed; next try in %d s", interval)
        else:
            with open(HEARTBEAT, "w", encoding="ascii") as handle:
                handle.write(str(int(time.time())))
        finally:
            connections.close_all()
        time.sleep(interval)


if __name__ == "__main__":
    main()
