#!/opt/pretix/venv/bin/python
"""Container healthcheck for every pretix process type (see entrypoint.sh)."""
import configparser
import os
import sys
import time
import urllib.parse
import urllib.request


def site_host():
    """Host header pretix accepts: the one of [pretix] url (others get a 400)."""
    config = configparser.RawConfigParser()
    config.read(os.environ.get("PRETIX_CONFIG_FILE", "/etc/pretix/pretix.cfg"))
    url = os.environ.get("PRETIX_PRETIX_URL") or config.get("pretix", "url", fallback="http://localhost")
    return urllib.parse.urlsplit(url).netloc


def main():
    try:
        with open("/tmp/pretix-mode") as f:
            mode = f.read().strip()
    except OSError:
        return 1
    if mode == "web":
        # /healthcheck/ touches the database and the cache, so it fails when
        # pgpool or redis-proxy are unreachable, not only when gunicorn is down.
        request = urllib.request.Request("http://127.0.0.1:8000/healthcheck/", headers={"Host": site_host()})
        with urllib.request.urlopen(request, timeout=8) as r:
            return 0 if r.status == 200 else 1
    if mode == "cron":
        interval = int(os.environ.get("PRETIX_CRON_INTERVAL", "60"))
        try:
            with open("/tmp/pretix-cron-heartbeat") as f:
                last = int(f.read().strip())
        except OSError:
            # No successful run yet: the start period covers the first one.
            return 1
        return 0 if time.time() - last < 3 * interval + 300 else 1
    # worker and one-shot modes: the process being alive is what Swarm needs;
    # a broker outage makes celery exit, which Swarm then restarts.
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # any error is "unhealthy", with the reason in the log
        print(exc, file=sys.stderr)
        sys.exit(1)
